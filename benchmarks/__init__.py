"""layerforge's performance suite: each benchmark measures a ratio against a baseline run in
the same process and writes JSON to ``benchmarks/results/``; ``RESULTS.md`` summarizes them."""
