"""Run the performance suite: ``python -m benchmarks [--quick] [--only NAME ...] [--results DIR]``.

Each benchmark runs in its own subprocess (so thread settings, torch.compile caches and
crashes stay isolated) and writes ``DIR/NAME.json`` through :func:`benchmarks.common.write_result`.
A benchmark that crashes or runs past its time limit is recorded as a result with ``error``
(and ``met: false``) instead of stopping the suite. At the end ``DIR/RESULTS.md`` (the
committed ``benchmarks/RESULTS.md`` by default) is regenerated from every result file in
``DIR``: the machine, then one table row per benchmark, then a section per benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine, write_result

#: (module name, title, time limit in seconds for the full run / the quick run), in issue order.
BENCHMARKS: list[tuple[str, str, int, int]] = [
    ("proposal_throughput", "1. Proposal throughput", 240, 180),
    ("layer_overhead", "2. Compiled-layer overhead", 600, 300),
    ("rejection_funnel", "3. Rejection funnel", 1800, 300),
    ("controller_overhead", "4. Controller and storage overhead", 600, 180),
    ("training_throughput", "5. Evaluation throughput", 300, 300),
    ("search_efficiency", "6. Search efficiency", 7200, 600),
    ("api_load", "7. API under load", 300, 300),
    ("proxy_fidelity", "8. Proxy fidelity", 5400, 600),
    ("init_signal", "8b. Signal at initialisation", 600, 300),
    ("rediscovery", "9. Rediscovery (activation)", 7200, 900),
    ("normact_fidelity", "10a. Norm-act proxy fidelity", 3600, 300),
    ("normact_rediscovery", "10. Rediscovery (norm-act)", 5400, 900),
    ("search_internals", "11. Optuna ask and Pareto sorting", 900, 300),
    ("halving", "12. Successive halving", 2400, 300),
    ("peers", "13. Peers side by side (Optuna, Ray Tune)", 1800, 900),
]
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def available() -> list[tuple[str, str, int, int]]:
    """The registered benchmarks whose module exists (search_efficiency is optional)."""
    return [b for b in BENCHMARKS if importlib.util.find_spec(f"benchmarks.{b[0]}") is not None]


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------- child process
def run_child(name: str, quick: bool, results: Path) -> int:
    """Run one benchmark in this process and write its result (an error result on a crash)."""
    load_before = _load()
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        # a benchmark that writes files besides its JSON (a plot) writes them beside it
        if "results_dir" in inspect.signature(module.run).parameters:
            result = module.run(quick=quick, results_dir=results)
        else:
            result = module.run(quick=quick)
    except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on (an interrupt is not)
        result = error_result(
            name, f"{type(exc).__name__}: {exc}", traceback.format_exc()[-4000:], quick
        )
    result.setdefault("name", name)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["load_average"] = {"before": load_before, "after": _load()}
    result.setdefault("quick", quick)
    write_result(result, results)
    return 0 if "error" not in result else 1


def error_result(name: str, error: str, tb: str | None, quick: bool) -> dict[str, Any]:
    goal = None
    try:
        goal = getattr(importlib.import_module(f"benchmarks.{name}"), "GOAL", None)
    except Exception:  # noqa: BLE001
        pass
    return {
        "name": name,
        "goal": goal or "(unknown)",
        "met": False,
        "error": error,
        "figures": {"error": error},
        "traceback": tb,
        "config": {"quick": quick},
    }


# ----------------------------------------------------------------------------- RESULTS.md
def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01 or a == 0:
            return f"{v:.3g}"
        return f"{v:.2e}"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in v):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items() if not isinstance(x, (dict, list)))
    return str(v).replace("|", "\\|").replace("\n", " ")


def key_figures(result: dict[str, Any]) -> str:
    figures = result.get("figures") or {}
    if result.get("error"):
        return f"error: {_fmt(result['error'])[:160]}"
    if isinstance(figures.get("headline"), dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in figures["headline"].items())
    rows = figures.get("rows")
    if isinstance(rows, list) and rows:
        parts = []
        for r in rows[:4]:
            label = " ".join(str(r[k]) for k in ("backend", "workers", "space", "name") if k in r)
            num = next((r[k] for k in ("per_second", "ratio", "proposals_per_s") if k in r), None)
            parts.append(
                f"{label}: {_fmt(num) if num is not None else _fmt(r.get('skipped', '-'))}"
            )
        return "; ".join(parts)
    scalars = {k: v for k, v in figures.items() if isinstance(v, (int, float, str, bool))}
    return _fmt(dict(list(scalars.items())[:4]))


def _met(v: Any, result: dict[str, Any]) -> str:
    if result.get("error"):
        return "error"
    return {True: "met", False: "not met"}.get(v, "n/a")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                _fmt(r.get(c, ""))
                if not isinstance(r.get(c), (dict, list))
                else _fmt(json.dumps(r.get(c), default=str))[:120]
                for c in cols
            )
            + " |"
        )
    return out


def _figures_md(figures: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in figures.items():
        if k == "headline":
            continue
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out += ["", f"**{k}**", ""] + _table(v) + [""]
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            out += ["", f"**{k}**", ""] + _table([{"": kk, **vv} for kk, vv in v.items()]) + [""]
        elif isinstance(v, dict) and v and all(isinstance(x, list) for x in v.values()):
            out.append(f"- **{k}**:")
            for kk, vv in v.items():
                out.append(
                    f"  - {kk}: "
                    + "; ".join(
                        _fmt(x) if not isinstance(x, (dict, list)) else json.dumps(x, default=str)
                        for x in vv
                    )
                )
        elif isinstance(v, (dict, list)):
            out.append(f"- **{k}**: `{json.dumps(v, default=str)[:600]}`")
        else:
            out.append(f"- **{k}**: {_fmt(v)}")
    return out


def write_results_md(results_dir: Path, out: Path | None = None) -> Path:
    """Regenerate the summary from every ``*.json`` result in ``results_dir``."""
    out = out or (
        RESULTS_MD if results_dir.resolve() == RESULTS_DIR.resolve() else results_dir / "RESULTS.md"
    )
    order = {name: i for i, (name, *_rest) in enumerate(BENCHMARKS)}
    titles = {name: title for name, title, *_rest in BENCHMARKS}
    results = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    results.sort(key=lambda r: (order.get(r.get("name"), 99), r.get("name", "")))
    mach = results[0].get("machine") if results else machine()
    lines = [
        "# layerforge benchmark results",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`python -m benchmarks` (`make bench`). Every figure is a ratio against a baseline "
        "run in the same process where one applies; raw numbers are in `results/*.json`.",
        "",
        "**Machine**: "
        + _fmt(
            {k: v for k, v in (mach or {}).items() if k not in ("torch_threads", "python_loop_ms")}
        ),
        "",
        "Absolute figures (proposals/s, candidates/s, requests/s, latency) move with the "
        "machine's speed, which each section records as the time of `sum(range(10**6))` "
        "on one core; the ratios against in-process baselines do not. Two machines of "
        "this workplace ran the same proposal code at 19,326 proposals/s (10.7 ms) and "
        "4,500 proposals/s (31.6 ms).",
        "",
    ]
    quick = sorted({bool(r.get("quick") or (r.get("config") or {}).get("quick")) for r in results})
    if True in quick:
        lines += [
            "> Some results below come from `--quick` runs (short, noisy): "
            "do not read them as the final figures.",
            "",
        ]
    lines += [
        "| Benchmark | Goal | Key figures | Result | Run at (load avg before) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        name = r.get("name", "?")
        load = (r.get("load_average") or {}).get("before")
        lines.append(
            f"| [{titles.get(name, name)}](#{name}) | {_fmt(r.get('goal', ''))} | "
            f"{key_figures(r)} | {_met(r.get('met'), r)} | {r.get('finished_at', '')} "
            f"({_fmt(load) if load else '-'}) |"
        )
    for r in results:
        name = r.get("name", "?")
        lines += [
            "",
            f'<a id="{name}"></a>',
            f"## {titles.get(name, name)} (`{name}`)",
            "",
            f"- **Goal**: {r.get('goal', '')}",
            f"- **Result**: {_met(r.get('met'), r)}"
            + (" (quick run)" if r.get("quick") or (r.get("config") or {}).get("quick") else ""),
            f"- **Torch threads**: {(r.get('machine') or {}).get('torch_threads', '-')}; "
            f"machine speed (`sum(range(10**6))`, ms, lower is faster): "
            f"{(r.get('machine') or {}).get('python_loop_ms', 'not recorded')}",
            f"- **Took**: {_fmt(r.get('seconds', '-'))} s; load average before / after: "
            f"{_fmt((r.get('load_average') or {}).get('before'))} / "
            f"{_fmt((r.get('load_average') or {}).get('after'))}",
        ]
        if r.get("note"):
            lines += ["", "**Note.** " + str(r["note"])]
        if r.get("error"):
            lines += ["", f"**Error**: `{r['error']}`"]
        lines += ["", "### Figures"] + _figures_md(r.get("figures") or {})
        lines += [
            "",
            "<details><summary>config</summary>",
            "",
            "```json",
            json.dumps(r.get("config", {}), indent=1, default=str)[:4000],
            "```",
            "</details>",
        ]
    out.write_text("\n".join(lines) + "\n")
    return out


# ----------------------------------------------------------------------------- parent
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="run each benchmark briefly")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="where JSON and RESULTS.md go"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    if args.child:
        return run_child(args.child, args.quick, results)
    bench = available()
    if args.list:
        for name, title, _full, _quick in bench:
            print(f"{name:22s} {title}")
        return 0
    if args.only:
        known = {b[0] for b in bench}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(
                f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        bench = [b for b in bench if b[0] in args.only]

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    failures = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("benchmarks", total=len(bench))
        for name, title, limit_full, limit_quick in bench:
            progress.update(task, description=f"{title} ({name})")
            limit = limit_quick if args.quick else limit_full
            cmd = [sys.executable, "-m", "benchmarks", "--child", name, "--results", str(results)]
            if args.quick:
                cmd.append("--quick")
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
                rc, tail = proc.returncode, (proc.stderr or "")[-3000:]
            except subprocess.TimeoutExpired as exc:
                rc = None
                err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
                tail = f"timed out after {limit}s\n" + err[-3000:]
            path = results / f"{name}.json"
            fresh = (
                path.exists()
                and path.stat().st_mtime >= time.time() - (time.perf_counter() - start) - 1
            )
            if rc is None or (rc not in (0, 1)) or not fresh:
                why = "timed out" if rc is None else f"exited with status {rc}"
                write_result(
                    {
                        **error_result(name, f"benchmark process {why}", tail, args.quick),
                        "seconds": round(time.perf_counter() - start, 2),
                    },
                    results,
                )
            data = json.loads(path.read_text())
            failures += bool(data.get("error"))
            status = _met(data.get("met"), data)
            colour = {"met": "green", "not met": "yellow", "error": "red"}.get(status, "white")
            progress.console.print(f"[{colour}]{status:8s}[/] {name:22s} {key_figures(data)[:110]}")
            progress.advance(task)
    md = write_results_md(results)
    console.print(f"results in {results}, summary in {md}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
