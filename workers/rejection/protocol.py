"""The protocol loop: run the configured stages in order over one :class:`EvaluationRun`."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from layerforge.workers.datasets import DatasetCache
from layerforge.workers.errors import WorkersError
from layerforge.workers.jobs import RUNG, Verdict
from layerforge.workers.rejection.config import STAGES, RejectionConfig, Stage
from layerforge.workers.rejection.proxies import proxy_results
from layerforge.workers.rejection.registry import StageFn, get_stage
from layerforge.workers.rejection.run import (
    Deadline,
    EvaluationRun,
    Fail,
    Reject,
    StageVerdict,
    describe,
    is_oom,
    release_memory,
)
from layerforge.workers.rejection.rungs import Paused, restore_run, save_run
from layerforge.workers.tasks import ProxyTask

__all__ = ["evaluate_candidate"]

_NO_COSTS: dict[str, Any] = {"runtime_ratio": None, "num_params": None}


def evaluate_candidate(
    graph_dict: Any,
    proxies: list[dict[str, Any]],
    config: dict[str, Any] | RejectionConfig | None = None,
    *,
    seen: Callable[[str], dict[str, Any] | None] | None = None,
    device: str | torch.device = "cpu",
    datasets_cache: DatasetCache | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    rung: int | None = None,
    checkpoint: bytes | None = None,
) -> dict[str, Any]:
    """Run the rejection protocol and, for survivors, the full evaluation. Never raises.

    Returns a JSON-safe dict: ``status`` (``"completed"``, ``"rejected"`` or ``"failed"``),
    ``stage`` (where it stopped; ``"full"`` when completed, ``"duplicate"`` when an earlier
    result was reused), ``reason``, ``stages`` (``[{name, seconds, passed, reason}]`` in order),
    ``proxies`` (one :meth:`TrainResult.to_dict` per proxy), ``costs``
    (``{runtime_ratio, num_params}``), ``fingerprint`` and ``latex`` (the formula, None when
    the graph has none: computed here, where it costs a few ms beside a training run, so the
    service never has to). A reused duplicate also carries ``duplicate_of`` (the earlier
    result's fingerprint) and ``reused: true``, with the earlier result's status, proxies and
    costs. ``seen(fingerprint)`` returns an earlier result or None.

    Successive halving (:mod:`.rungs`): with ``rung``, the full evaluation stops at that
    step and the result has ``status="rung"``, ``rung`` (the step), ``proxies`` (each
    proxy's result there) and ``checkpoint`` (bytes: the run's state); with ``checkpoint``,
    the run an earlier rung saved continues from there (to ``rung`` again, or to the end)
    instead of starting over. Every result of such a run lists the rungs it reached
    (``rungs``: ``[{"step", "accuracy"}]``).
    """
    from layerforge.grammar import formula_latex
    from layerforge.workers.candidates import resolve_candidate

    result = _evaluate(
        graph_dict,
        proxies,
        config,
        seen=seen,
        device=torch.device(device),
        datasets_cache=datasets_cache,
        progress=progress,
        rung=rung,
        checkpoint=checkpoint,
    )
    try:
        graph = resolve_candidate(graph_dict).graph
    except Exception:  # noqa: BLE001 - the result already says why the candidate is unusable
        graph = None
    result["latex"] = None if graph is None else formula_latex(graph)
    return result


def _result(
    status: str, stage: str | None, reason: str, run: EvaluationRun | None, **extra: Any
) -> dict[str, Any]:
    """The JSON result shape every outcome shares."""
    out: dict[str, Any] = {
        "status": status,
        "stage": stage,
        "reason": reason,
        "stages": [] if run is None else [v.to_dict() for v in run.verdicts],
        "proxies": [],
        "costs": dict(_NO_COSTS),
        "fingerprint": None if run is None else run.fingerprint,
        "gain": None if run is None else run.gain,
    }
    out.update(extra)
    return out


def _run_stage(
    run: EvaluationRun,
    name: Stage | str,
    fn: StageFn,
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Run one stage, recording its verdict; out-of-memory becomes a rejection."""
    t0, name = time.perf_counter(), str(name)
    try:
        run.deadline.check(name)
        reason = fn(run)
    except (Reject, Fail) as exc:
        run.verdicts.append(StageVerdict(name, False, str(exc), time.perf_counter() - t0))
        raise
    except Exception as exc:
        if is_oom(exc):
            release_memory(run.device)
            msg = f"out of memory during {name}: {describe(exc)}"
            run.verdicts.append(StageVerdict(name, False, msg, time.perf_counter() - t0))
            raise Reject(msg) from exc
        raise
    run.verdicts.append(StageVerdict(name, True, reason, time.perf_counter() - t0))
    if progress is not None:
        progress({"stage": name, "passed": True})


def _take_fingerprint(run: EvaluationRun) -> None:
    """The candidate's functional fingerprint; a failure to compute one is the probe
    stage's to judge (it rejects such a candidate), else a rejection here."""
    try:
        gain = "fair" if any(t.gain == "fair" for t in run.tasks) else "raw"
        run.fingerprint = run.cand.fingerprint(gain)
    except Exception as exc:
        if Stage.PROBE not in run.config.stages:
            raise Reject(f"fingerprint raised {describe(exc)}") from exc
        run.fingerprint = None


def _normalize_gain(run: EvaluationRun) -> None:
    """Gain-fair evaluation (see :mod:`workers.gain`): an activation candidate of a job with a
    ``gain="fair"`` proxy gets its gain gamma_f, and the probe stage and the proxies run
    ``f / gamma_f``. An unusable gain rejects the candidate at the probe stage."""
    from layerforge.grammar.gain import GainError
    from layerforge.workers.gain import GainNormalizedFactory, candidate_gain

    if run.cand.kind != "activation" or not any(t.gain == "fair" for t in run.tasks):
        return
    t0 = time.perf_counter()
    try:
        gamma = candidate_gain(run.cand)
    except GainError as exc:
        run.verdicts.append(
            StageVerdict(str(Stage.PROBE), False, str(exc), time.perf_counter() - t0)
        )
        raise Reject(str(exc)) from exc
    except Exception as exc:  # the candidate's own code raised on the quadrature nodes
        reason = f"computing the gain raised {describe(exc)}"
        run.verdicts.append(StageVerdict(str(Stage.PROBE), False, reason, time.perf_counter() - t0))
        raise Reject(reason) from exc
    run.gain = {"gamma": gamma, "mode": "fair"}
    run.layer_factory = GainNormalizedFactory(run.cand.factory, gamma)


def _measure_costs(run: EvaluationRun) -> None:
    """Runtime against the baseline layer and parameter count (best effort)."""
    from layerforge.workers.costs import measure_layer_cost

    try:
        # the raw layer: the gain constant folds into the function's own arithmetic (the
        # export carries it as one multiply), it is not a cost of the candidate
        c = measure_layer_cost(
            run.cand.factory,
            run.cand.kind,
            shape=tuple(run.config.cost_shape),
            repeats=run.config.cost_repeats,
            device=run.device,
        )
        run.costs = {"runtime_ratio": c["runtime_ratio"], "num_params": c["num_params"]}
    except Exception as exc:  # noqa: BLE001 - costs are best effort
        if is_oom(exc):
            release_memory(run.device)
        run.costs = {**_NO_COSTS, "error": describe(exc)}


def _stages_to_run(run: EvaluationRun) -> list[Stage]:
    """The configured stages after ``static``."""
    return [s for s in STAGES[1:] if s in run.config.stages]


def _evaluate(
    graph_dict: Any,
    proxies: list[dict[str, Any]],
    config: dict[str, Any] | RejectionConfig | None,
    *,
    seen: Callable[[str], dict[str, Any] | None] | None,
    device: torch.device,
    datasets_cache: DatasetCache | None,
    progress: Callable[[dict[str, Any]], None] | None,
    rung: int | None = None,
    checkpoint: bytes | None = None,
) -> dict[str, Any]:
    try:
        cfg = RejectionConfig.from_dict(config)
        tasks = [ProxyTask.from_dict(p) for p in (proxies or [])]
    except (WorkersError, ValueError, TypeError) as exc:
        return _result(Verdict.FAILED, None, f"bad input: {exc}", None)
    if not tasks and (Stage.QUALITY in cfg.stages or Stage.FULL in cfg.stages):
        return _result(Verdict.FAILED, None, "bad input: no proxies to train on", None)
    run = EvaluationRun(
        candidate_spec=graph_dict,
        tasks=tasks,
        config=cfg,
        device=device,
        deadline=Deadline(cfg.time_limit_s),
        seen=seen,
        datasets_cache=datasets_cache,
        pause_at=rung,
    )
    current = "static"
    try:
        if checkpoint is not None:
            current = str(Stage.FULL)
            try:
                restore_run(run, checkpoint)
            except ValueError as exc:
                raise Fail(f"cannot continue from the checkpoint: {exc}") from exc
            _run_stage(run, Stage.FULL, get_stage(Stage.FULL), progress)
        else:
            _run_stage(run, Stage.STATIC, get_stage(Stage.STATIC), progress)
            _take_fingerprint(run)
            current = str(Stage.PROBE)
            _normalize_gain(run)
            for name in _stages_to_run(run):
                current = str(name)
                _run_stage(run, name, get_stage(name), progress)
        if cfg.measure_costs:
            current = "costs"
            _measure_costs(run)
        last = run.verdicts[-1].name if run.verdicts else None
        return _result(
            Verdict.COMPLETED,
            last,
            "passed every stage",
            run,
            proxies=proxy_results(run),
            costs=run.costs,
            **_rung_history(run),
        )
    except Paused as paused:
        return _result(
            RUNG,
            str(Stage.FULL),
            f"reached rung {paused.step}: mean validation accuracy "
            f"{sum(paused.accuracy) / max(1, len(paused.accuracy)):.3f}",
            run,
            proxies=proxy_results(run),
            rung=paused.step,
            checkpoint=save_run(run),
            **_rung_history(run),
        )
    except Reject as exc:
        if run.earlier is not None:
            return _reused(run, str(exc))
        return _result(
            Verdict.REJECTED,
            run.verdicts[-1].name if run.verdicts else current,
            str(exc),
            run,
            proxies=proxy_results(run),
            **_rung_history(run),
        )
    except Fail as exc:
        return _result(Verdict.FAILED, current, str(exc), run)
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected error: recorded, not raised
        if is_oom(exc):
            release_memory(device)
            return _result(Verdict.REJECTED, current, f"out of memory: {describe(exc)}", run)
        tb = traceback.format_exc(limit=4)
        return _result(
            Verdict.FAILED,
            current,
            f"unexpected error: {describe(exc)}",
            run,
            traceback=tb[-2000:],
        )
    finally:
        run.trainers.clear()
        release_memory(device)


def _rung_history(run: EvaluationRun) -> dict[str, Any]:
    """``{"rungs": [...]}`` for a run that reached rungs (successive halving), else nothing:
    results of jobs without rungs keep their shape."""
    return {"rungs": list(run.rungs)} if run.rungs else {}


def _reused(run: EvaluationRun, reason: str) -> dict[str, Any]:
    """A duplicate's result: the earlier candidate's status, proxies and costs."""
    earlier = run.earlier or {}
    return _result(
        earlier.get("status", Verdict.COMPLETED),
        str(Stage.DUPLICATE),
        reason,
        run,
        proxies=list(earlier.get("proxies", [])),
        costs=dict(earlier.get("costs") or _NO_COSTS),
        duplicate_of=earlier.get("fingerprint", run.fingerprint),
        reused=True,
    )
