"""Successive-halving rungs on the worker side: pause the full evaluation at a rung, save
the whole run as a checkpoint, and continue it later (on any worker) from that step.

The controller decides (see :mod:`workers.jobs`); the worker only trains to the rung it was
given, evaluates every proxy there and returns the checkpoint with the verdict ``"rung"``.
A continuation rebuilds each proxy's network exactly as the first job did (same seed, same
gain-normalized layer), loads the saved weights, optimizer momentum, sampler position and
random state into it, and goes on: the steps after the rung are the ones an uninterrupted
run takes, so a candidate that is promoted to the end has trained its full steps once.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from layerforge.workers.rejection.run import EvaluationRun, Reject, StageVerdict

__all__ = ["CHECKPOINT_VERSION", "Paused", "pause_at_rung", "restore_run", "save_run"]

#: Bumped when the checkpoint's layout changes; an older checkpoint is refused, not misread.
CHECKPOINT_VERSION = 1


class Paused(Exception):
    """The full stage reached the job's rung: the run stops here and reports."""

    def __init__(self, step: int, accuracy: list[float]):
        super().__init__(f"reached rung {step}")
        self.step = step
        self.accuracy = accuracy


def pause_at_rung(run: EvaluationRun, train_to: Any) -> None:
    """When the job has a rung below some proxy's full steps, train every proxy to it
    (``train_to(run, trainer, step, where)``, the full stage's own training), evaluate
    each, record the rung and raise :class:`Paused`; otherwise return (train to the end).

    A proxy whose full run is shorter than the rung stops at its own end. A run that
    diverged by the rung is rejected as the full stage would reject it.
    """
    rung = run.pause_at
    if rung is None or not run.trainers or all(t.task.steps <= rung for t in run.trainers):
        return
    accuracy = []
    for index, trainer in enumerate(run.trainers):
        train_to(run, trainer, min(rung, trainer.task.steps), "full")
        res = trainer.result()
        if res.diverged:
            raise Reject(
                f"training diverged (NaN/Inf loss) at step {res.diverged_step} on "
                f"{trainer.task.name}"
            )
        run.quality_results[index] = res
        accuracy.append(float(res.val_accuracy))
    run.rungs.append({"step": rung, "accuracy": accuracy})
    raise Paused(rung, accuracy)


def save_run(run: EvaluationRun) -> bytes:
    """The run's whole state at a rung as bytes (``torch.save`` of tensors on the CPU)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": run.fingerprint,
        "gain": run.gain,
        "verdicts": [v.to_dict() for v in run.verdicts],
        "rungs": run.rungs,
        "trainers": [t.state_dict() for t in run.trainers],
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def restore_run(run: EvaluationRun, checkpoint: bytes) -> None:
    """Put the state :func:`save_run` saved back into ``run`` (whose candidate, tasks and
    config are the job's): the candidate resolved, the gain-normalized factory rebuilt,
    one trainer per proxy built and loaded. Raises :class:`ValueError` for a checkpoint
    that does not belong to this job."""
    from layerforge.workers.candidates import resolve_candidate
    from layerforge.workers.gain import GainNormalizedFactory
    from layerforge.workers.rejection.proxies import build_trainers

    try:
        state = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"the checkpoint cannot be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"the checkpoint's version is {state.get('version') if isinstance(state, dict) else None!r}, "
            f"this worker reads version {CHECKPOINT_VERSION}"
        )
    if len(state["trainers"]) != len(run.tasks):
        raise ValueError(
            f"the checkpoint holds {len(state['trainers'])} proxy runs, the job has "
            f"{len(run.tasks)} proxies"
        )
    run.candidate = resolve_candidate(run.candidate_spec)
    run.fingerprint = state["fingerprint"]
    run.gain = state["gain"]
    if run.gain is not None:
        run.layer_factory = GainNormalizedFactory(run.cand.factory, float(run.gain["gamma"]))
    run.verdicts = [
        StageVerdict(v["name"], bool(v["passed"]), v["reason"], float(v["seconds"]))
        for v in state["verdicts"]
    ]
    run.rungs = list(state["rungs"])
    build_trainers(run, reject_errors=False)
    for trainer, saved in zip(run.trainers, state["trainers"], strict=True):
        trainer.load_state_dict(saved)
