"""Shared plumbing for benchmarks: the machine's description, timing, and result files.

Every benchmark returns a dict with ``name``, ``goal`` (text), ``met`` (bool or None when no
goal applies), ``figures`` (the numbers) and ``config`` (what produced them); ``write_result``
saves it to ``benchmarks/results/NAME.json`` through a temporary file and a rename.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "python_loop_ms": python_loop_ms(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def python_loop_ms() -> float:
    """Milliseconds one core takes for ``sum(range(10**6))`` (best of 5): a yardstick of the
    machine's speed, because absolute figures (proposals/s, requests/s, latency) move with it
    while the ratios against in-process baselines stay put."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(range(10**6))
        best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 1)


def timed(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median and spread of ``repeats`` wall-clock runs of ``fn`` after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "repeats": repeats,
    }


def write_result(result: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Save a benchmark's result as JSON (atomically) and return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    result = {
        **result,
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = results_dir / f"{result['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path
