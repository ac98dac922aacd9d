"""Benchmark 11: layerforge beside the tools a user would pick instead, in one run.

A. The controller loop against Optuna's ask/tell on the same storage. Both sides run a
   two-objective search with a zero-cost evaluation, so what is timed is the search loop and
   its storage: layerforge's whole campaign loop (ask, store candidate and evaluation,
   dispatch to the simulated evaluator, store result, objectives, hypervolume and events,
   tell) against an Optuna study with the NSGA-II sampler over the `optuna` strategy's
   activation template (u1, u2, b), asked and told with two values. Same SQLite file type,
   same PostgreSQL server, and Optuna in memory as its own best case. One trial in flight and
   100 in flight (Optuna: ask 100, then tell 100).

B. Ray Tune's Tuner with its own searcher (random variants of the same template) and the
   ASHA scheduler, against layerforge's campaign loop, both driving the same proxy training
   code (workers.training.Trainer, resumed rung by rung for Tune). Reported: trials per
   second of pure overhead (a trainable that trains nothing), and the CPU-seconds each spends
   to reach the same hypervolume on (accuracy, nodes) with real training.

Every figure is a ratio against the peer measured in the same process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from typing import Any

GOAL = (
    "layerforge's campaign loop at least as fast per candidate as Optuna's ask/tell on the "
    "same storage; campaign overhead per trial below Ray Tune's"
)

TEMPLATE_UNARY = ["identity", "neg", "abs", "square", "exp", "sigmoid", "tanh", "sin", "relu"]
TEMPLATE_BINARY = ["add", "sub", "mul", "max", "min"]


def _values(params: dict[str, Any]) -> tuple[float, float]:
    """A deterministic zero-cost pair of objective values for a template assignment."""
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).digest()
    return digest[0] / 255.0, digest[1] / 255.0


def optuna_loop(storage: Any, trials: int, in_flight: int, seed: int = 0) -> dict[str, float]:
    """``trials`` NSGA-II trials asked and told on ``storage`` (an URL, or None: memory)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {
        "u1": CategoricalDistribution(TEMPLATE_UNARY),
        "u2": CategoricalDistribution(TEMPLATE_UNARY),
        "b": CategoricalDistribution(TEMPLATE_BINARY),
    }
    study = optuna.create_study(
        storage=storage,
        study_name=f"peers-{os.getpid()}-{time.monotonic_ns()}",
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=50),
    )
    start = time.perf_counter()
    done = 0
    while done < trials:
        batch = [study.ask(distributions) for _ in range(min(in_flight, trials - done))]
        for trial in batch:
            study.tell(trial, list(_values(trial.params)))
        done += len(batch)
    seconds = time.perf_counter() - start
    return {"trials": trials, "seconds": seconds, "per_second": trials / seconds}


#: layerforge's side of part A: the activation space and objectives of the Optuna side
LOOP_SPEC: dict[str, Any] = {
    "name": "peers-bench",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 6},
    "strategy": {"name": "evolution", "population": 50, "tournament": 8},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d"}],
    "objectives": ["accuracy", "nodes"],
    "fidelity": {"enabled": False},
}


def layerforge_loop(url: str, candidates: int, in_flight: int) -> dict[str, float]:
    """One layerforge campaign through the real loop on ``url`` with a simulated evaluator
    (benchmark 4's loop on :data:`LOOP_SPEC`)."""
    from benchmarks.controller_overhead import run_loop

    return run_loop(url, in_flight, candidates, base=LOOP_SPEC)


def compare_storage(quick: bool) -> list[dict[str, Any]]:
    """Part A: one row per (backend, in-flight count)."""
    from benchmarks.controller_overhead import _postgres_database

    trials = 30 if quick else 500
    rows: list[dict[str, Any]] = []
    for in_flight in (1, 100):
        memory = optuna_loop(None, trials, in_flight)
        with tempfile.TemporaryDirectory() as tmp:
            ours = layerforge_loop(f"sqlite:///{tmp}/lf.db", trials, in_flight)
            theirs = optuna_loop(f"sqlite:///{tmp}/optuna.db", trials, in_flight)
        rows.append(_storage_row("sqlite", in_flight, ours, theirs, memory))
        pg = _postgres_database()
        if pg is None:
            rows.append({"backend": "postgresql", "in_flight": in_flight, "skipped": "no server"})
            continue
        url, drop = pg
        # a database of its own on the same server: Optuna and layerforge both keep their
        # schema version in alembic's `alembic_version` table, so they cannot share one
        peer = _postgres_database()
        try:
            ours = layerforge_loop(url, trials, in_flight)
            theirs = optuna_loop(peer[0] if peer else url, trials, in_flight)
        finally:
            drop()
            if peer:
                peer[1]()
        rows.append(_storage_row("postgresql", in_flight, ours, theirs, memory))
    return rows


def _storage_row(backend: str, in_flight: int, ours: dict, theirs: dict, memory: dict) -> dict:
    return {
        "backend": backend,
        "in_flight": in_flight,
        "layerforge_per_s": round(ours["per_second"], 1),
        "optuna_nsga2_per_s": round(theirs["per_second"], 1),
        "optuna_in_memory_per_s": round(memory["per_second"], 1),
        "ratio_layerforge_to_optuna": round(ours["per_second"] / theirs["per_second"], 2),
        "ratio_layerforge_to_optuna_in_memory": round(ours["per_second"] / memory["per_second"], 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Both comparisons; returns the result dict."""
    storage_rows = compare_storage(quick)
    tune = compare_tune(quick)
    measured = [r for r in storage_rows if "ratio_layerforge_to_optuna" in r]
    met_storage = all(r["ratio_layerforge_to_optuna"] >= 1.0 for r in measured)
    met_tune = tune.get("overhead_ratio_tune_to_layerforge", 0) >= 1.0
    search = tune.get("search") or {}
    note = (
        "candidates/s of layerforge's loop over Optuna NSGA-II's trials/s on the same backend: "
        + ", ".join(
            f"{r['backend']} with {r['in_flight']} in flight x{r['ratio_layerforge_to_optuna']}"
            for r in measured
        )
        + f"; Ray Tune's CPU-seconds per trial of pure overhead over layerforge's: "
        f"x{tune.get('overhead_ratio_tune_to_layerforge', '-')}"
        + f"; CPU-seconds to the same hypervolume ({search.get('target_hypervolume', '-')}), "
        f"Tune + ASHA over layerforge + successive halving: "
        f"x{search.get('ratio_tune_to_layerforge_cpu', '-')}"
    )
    return {
        "name": "peers",
        "goal": GOAL,
        "note": note,
        "met": met_storage and met_tune,
        "figures": {
            "headline": headline(storage_rows, tune),
            "optuna_same_storage": storage_rows,
            "ray_tune": tune,
        },
        "config": {
            "quick": quick,
            "template_unary": TEMPLATE_UNARY,
            "template_binary": TEMPLATE_BINARY,
        },
    }


def headline(storage_rows: list[dict[str, Any]], tune: dict[str, Any]) -> dict[str, Any]:
    """The ratios of both comparisons, for the summary table (> 1: layerforge ahead)."""
    out: dict[str, Any] = {
        f"ours / Optuna NSGA-II per candidate, {r['backend']}, {r['in_flight']} in flight": r[
            "ratio_layerforge_to_optuna"
        ]
        for r in storage_rows
        if "ratio_layerforge_to_optuna" in r
    }
    if "overhead_ratio_tune_to_layerforge" in tune:
        out["Tune / ours CPU per trivial trial"] = tune["overhead_ratio_tune_to_layerforge"]
    search = tune.get("search") or {}
    if search.get("ratio_tune_to_layerforge_cpu") is not None:
        out["Tune+ASHA / ours+halving CPU-s to the same hypervolume"] = search[
            "ratio_tune_to_layerforge_cpu"
        ]
    return out


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far by process ``pid`` (default: this one) and everything under
    it, reaped children included (Linux /proc: utime + stime + cutime + cstime of every live
    process of the tree; a reaped worker's time is in its parent's cutime)."""
    pid = os.getpid() if pid is None else pid
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = sum(int(v) for v in fields[11:15]) / ticks
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(children.get(current, []))
    return total


# ------------------------------------------------------------------------- part B: Ray Tune
TUNE_CONFIG: dict[str, Any] = {
    "ops": "swish",
    "max_nodes": 4,
    # one real proxy, small enough that a trial takes about a second on one core here
    "proxy": {"arch": "mlp", "dataset": "mnist1d", "steps": 300, "batch_size": 128},
    "rung_steps": 33,  # Tune's training_iteration: one report every 33 steps (9 per trial)
    "asha": {"grace_period": 1, "reduction_factor": 3},
    "trials": 48,
    "parallel": 2,
    "overhead_trials": 60,
    # layerforge's side runs with successive halving at one rung after the quality stage,
    # keeping about the third that ASHA (reduction factor 3) keeps
    "promotion": {"rungs": [100], "fraction": 0.34},
}


def _template_graph(unary1: str, unary2: str, binary: str):
    """The Swish core unit b(u1(x), u2(x)) as a graph (``identity`` passes x through)."""
    from layerforge.grammar import Graph, Node

    nodes = [Node("x")]
    refs = []
    for op in (unary1, unary2):
        if op == "identity":
            refs.append(0)
        else:
            nodes.append(Node(op, (0,)))
            refs.append(len(nodes) - 1)
    nodes.append(Node(binary, tuple(refs)))
    return Graph("activation", tuple(nodes))


def _space_ops(ops: str) -> tuple[list[str], list[str]]:
    from layerforge.grammar import get_op
    from layerforge.search.spec import validate_spec

    spec = validate_spec(
        {
            "space": {"kind": "activation", "ops": ops, "max_nodes": 4},
            "proxies": [{"arch": "mlp", "dataset": "digits"}],
        }
    )
    space = spec.space.build()
    unary = ["identity"] + [o for o in space.ops if get_op(o).arity == 1]
    binary = [o for o in space.ops if get_op(o).arity == 2]
    return unary, binary


def _tune_trainable(config: dict[str, Any]) -> None:
    """One Tune trial: the template function, gain-normalized as layerforge trains it, on
    the same proxy with the same Trainer, reported every ``rung_steps`` steps."""
    import math

    import torch
    from ray import tune

    from layerforge.grammar import layer_factory
    from layerforge.grammar.gain import activation_gain
    from layerforge.workers.gain import GainNormalizedFactory
    from layerforge.workers.tasks import ProxyTask
    from layerforge.workers.training import make_trainer

    torch.set_num_threads(1)
    graph = _template_graph(config["u1"], config["u2"], config["b"])
    nodes = graph.num_nodes
    task = ProxyTask.from_dict(dict(config["proxy"]))
    try:
        gamma = activation_gain(graph)
    except (ValueError, ArithmeticError):
        gamma = float("nan")
    if not math.isfinite(gamma) or gamma < 1e-6:
        tune.report({"accuracy": 0.0, "nodes": nodes, "step": task.steps})
        return
    trainer = make_trainer(task, GainNormalizedFactory(layer_factory(graph), gamma), "activation")
    step = 0
    while step < task.steps:
        step = min(task.steps, step + int(config["rung_steps"]))
        going = trainer.run_until(step)
        accuracy = trainer.evaluate()[0] if going else 0.0
        tune.report({"accuracy": float(accuracy), "nodes": nodes, "step": step})
        if not going:
            return


def _tune_overhead_trainable(config: dict[str, Any]) -> None:
    """A trial that trains nothing: what Tune costs per trial."""
    from ray import tune

    tune.report({"accuracy": 0.5, "nodes": 2, "step": 1})


def _front_volume(points: list[tuple[float, float]], max_nodes: int) -> float:
    """Hypervolume of (1 - accuracy, nodes / (max_nodes + 1)) against the reference (1, 1)."""
    from layerforge.search.pareto import hypervolume

    if not points:
        return 0.0
    minimized = [(1.0 - acc, nodes / (max_nodes + 1)) for acc, nodes in points]
    return float(hypervolume(minimized, [1.0, 1.0]))


def tune_side(config: dict[str, Any], overhead: bool, last: bool = True) -> dict[str, Any]:
    """Ray Tune with random variants of the template and ASHA; in a process of its own
    (Ray stays up for the next phase unless ``last``)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    unary, binary = _space_ops(config["ops"])
    if not ray.is_initialized():
        ray.init(num_cpus=config["parallel"], include_dashboard=False, log_to_driver=False)
    cpu_start = tree_cpu_seconds()
    start = time.perf_counter()
    curve: list[tuple[float, float]] = []
    points: list[tuple[float, float]] = []
    full_steps = int(config["proxy"]["steps"])

    class Front(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if result.get("step") == full_steps or overhead:
                points.append((float(result.get("accuracy", 0.0)), float(result.get("nodes", 0))))
            curve.append(
                (tree_cpu_seconds() - cpu_start, _front_volume(points, config["max_nodes"]))
            )

    space = {
        "u1": tune.choice(unary),
        "u2": tune.choice(unary),
        "b": tune.choice(binary),
        "proxy": config["proxy"],
        "rung_steps": config["rung_steps"],
    }
    trials = config["overhead_trials"] if overhead else config["trials"]
    tuner = tune.Tuner(
        tune.with_resources(_tune_overhead_trainable if overhead else _tune_trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            num_samples=trials,
            max_concurrent_trials=config["parallel"],
            scheduler=None
            if overhead
            else ASHAScheduler(
                time_attr="training_iteration",
                max_t=-(-full_steps // config["rung_steps"]),
                **config["asha"],
            ),
        ),
        run_config=tune.RunConfig(
            storage_path=tempfile.mkdtemp(prefix="lf-tune-"),
            callbacks=[Front()],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    seconds = time.perf_counter() - start
    cpu = tree_cpu_seconds() - cpu_start
    if last:
        ray.shutdown()
    stopped = sum(1 for r in grid if (r.metrics or {}).get("step") != full_steps)
    return {
        "trials": trials,
        "seconds": seconds,
        "trials_per_second": trials / seconds,
        "cpu_seconds": cpu,
        "stopped_early": 0 if overhead else stopped,
        "curve": curve,
        "final_hypervolume": curve[-1][1] if curve else 0.0,
    }


def layerforge_side(config: dict[str, Any], overhead: bool, last: bool = True) -> dict[str, Any]:
    """A layerforge campaign on the default (Ray) evaluator; in a process of its own (Ray
    stays up for the next phase unless ``last``)."""
    import layerforge
    from layerforge.workers import ray_session

    proxy = dict(config["proxy"])
    if overhead:
        proxy["steps"] = 1
    trials = config["overhead_trials"] if overhead else config["trials"]
    spec: dict[str, Any] = {
        "name": "peers-tune",
        "space": {"kind": "activation", "ops": config["ops"], "max_nodes": config["max_nodes"]},
        "proxies": [proxy],
        "objectives": ["accuracy", "nodes"],
        "parallelism": config["parallel"],
        "fidelity": {"enabled": False},
        "budget": {"max_candidates": trials, "max_seconds": 3600},
    }
    if config.get("promotion") and not overhead:
        spec["promotion"] = config["promotion"]
    if config.get("quality_steps") and not overhead:
        spec["rejection"] = {"quality_steps": config["quality_steps"]}
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/peers.db"
        curve: list[tuple[float, float]] = []
        cpu_start = tree_cpu_seconds()
        start = time.perf_counter()
        seen = {"completed": -1}

        def progress(state) -> None:
            done = state.counts.get("completed", 0)
            if done == seen["completed"]:
                return
            seen["completed"] = done
            curve.append((tree_cpu_seconds() - cpu_start, done))

        result = layerforge.run(
            spec, database=database, evaluator="ray", progress=progress, workers=config["parallel"]
        )
        seconds = time.perf_counter() - start
        cpu = tree_cpu_seconds() - cpu_start
        rows = result.candidates
        if last:
            ray_session.shutdown()
    accuracy = f"accuracy:{proxy['arch']}/{proxy['dataset']}"  # the objective's stored name
    completed = [
        (r.objectives[accuracy], float(r.num_nodes))
        for r in sorted(rows, key=lambda r: r.seq)
        if r.status == "completed" and accuracy in r.objectives
    ]
    # the curve: at each progress point, the front of the candidates completed by then
    # (taken in proposal order: the k completed first are close to the first k proposed)
    volumes = [
        (cpu_at, _front_volume(completed[: int(done)], config["max_nodes"]))
        for cpu_at, done in curve
    ]
    return {
        "trials": trials,
        "seconds": seconds,
        "trials_per_second": trials / seconds,
        "cpu_seconds": cpu,
        "status": result.status,
        "counts": result.counts,
        "curve": volumes,
        "final_hypervolume": _front_volume(completed, config["max_nodes"]),
    }


def _phases(fn_name: str, config: dict[str, Any], overheads: tuple[bool, ...]) -> list[dict]:
    """Each phase in order in this process, on one Ray instance started by the first."""
    last = len(overheads) - 1
    return [globals()[fn_name](config, overhead, i == last) for i, overhead in enumerate(overheads)]


def _in_child(fn_name: str, config: dict[str, Any], *overheads: bool) -> list[dict[str, Any]]:
    """Run ``fn_name`` once per phase (``overhead`` True or False), in order, in one fresh
    process: each side gets its own Ray and its own CPU count."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_phases, (fn_name, config, overheads))


def _cpu_to_reach(
    curve: list[list[float]] | list[tuple[float, float]], target: float
) -> float | None:
    for cpu, volume in curve:
        if volume >= target - 1e-12:
            return round(float(cpu), 1)
    return None


def compare_tune(quick: bool) -> dict[str, Any]:
    """Part B: per-trial overhead, then CPU-seconds to the same hypervolume."""
    config = dict(TUNE_CONFIG)
    if quick:
        # two rungs of the same 33-step report interval, promotion at the first: the same
        # code paths as the full run at about a fifth of the training
        config.update(
            trials=4,
            overhead_trials=4,
            proxy=dict(config["proxy"], steps=66),
            promotion=dict(config["promotion"], rungs=[33]),
            quality_steps=33,
        )
    figures: dict[str, Any] = {"config": config}
    try:
        import ray.tune  # noqa: F401 - the peer must be installed to be measured
    except ImportError as exc:
        return {**figures, "skipped": f"ray[tune] is not installed: {exc}"}
    if quick:  # one process and one Ray per side for both phases: half the start-ups
        tune_overhead, tune_run = _in_child("tune_side", config, True, False)
        ours_overhead, ours_run = _in_child("layerforge_side", config, True, False)
    else:
        (tune_overhead,) = _in_child("tune_side", config, True)
        (ours_overhead,) = _in_child("layerforge_side", config, True)
        (tune_run,) = _in_child("tune_side", config, False)
        (ours_run,) = _in_child("layerforge_side", config, False)
    figures["overhead"] = {
        "tune_trials_per_s": round(tune_overhead["trials_per_second"], 2),
        "layerforge_trials_per_s": round(ours_overhead["trials_per_second"], 2),
        "tune_cpu_per_trial": round(tune_overhead["cpu_seconds"] / tune_overhead["trials"], 3),
        "layerforge_cpu_per_trial": round(
            ours_overhead["cpu_seconds"] / ours_overhead["trials"], 3
        ),
    }
    figures["overhead_ratio_tune_to_layerforge"] = round(
        figures["overhead"]["tune_cpu_per_trial"] / figures["overhead"]["layerforge_cpu_per_trial"],
        2,
    )
    target = min(tune_run["final_hypervolume"], ours_run["final_hypervolume"])
    tune_cpu = _cpu_to_reach(tune_run["curve"], target)
    ours_cpu = _cpu_to_reach(ours_run["curve"], target)
    figures["search"] = {
        "target_hypervolume": round(target, 4),
        "tune_asha": {k: v for k, v in tune_run.items() if k != "curve"},
        "layerforge": {k: v for k, v in ours_run.items() if k != "curve"},
        "tune_cpu_to_target": tune_cpu,
        "layerforge_cpu_to_target": ours_cpu,
        "ratio_tune_to_layerforge_cpu": round(tune_cpu / ours_cpu, 2)
        if tune_cpu and ours_cpu
        else None,
        "curves": {"tune_asha": tune_run["curve"], "layerforge": ours_run["curve"]},
    }
    return figures
