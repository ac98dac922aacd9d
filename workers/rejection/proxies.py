"""The stages on the proxy networks: ``trainability``, ``quality`` and ``full``.

They share one training run per proxy: the trainability stage builds each proxy's network
with the candidate and takes its first steps, the quality stage continues the same runs to
``quality_steps`` and the full evaluation to each proxy's ``steps`` (as in EvoNorm, the
quality check is the start of the full run, so nothing is trained twice).
"""

from __future__ import annotations

from typing import Any

import torch

from layerforge.workers.errors import WorkersError
from layerforge.workers.rejection.config import Stage
from layerforge.workers.rejection.registry import register_stage
from layerforge.workers.rejection.run import EvaluationRun, Fail, Reject, describe, is_oom
from layerforge.workers.training import Trainer, make_trainer

__all__ = ["build_trainers", "full", "proxy_results", "quality", "trainability"]


def build_trainers(run: EvaluationRun, *, reject_errors: bool) -> None:
    """One trainer per proxy task. A setup error (bad task, missing dependency) fails the
    job; with ``reject_errors`` any other error (but out-of-memory) rejects the candidate,
    otherwise it propagates (recorded as an unexpected error)."""
    for task in run.tasks:
        try:
            run.trainers.append(
                make_trainer(
                    task,
                    run.factory if task.gain == "fair" else run.cand.factory,
                    run.cand.kind,
                    device=run.device,
                    cache=run.datasets_cache,
                )
            )
        except (WorkersError, ImportError) as exc:
            raise Fail(f"cannot set up proxy {task.name}: {exc}") from exc
        except Exception as exc:
            if not reject_errors or is_oom(exc):
                raise
            raise Reject(f"building proxy {task.name} raised {describe(exc)}") from exc


def train_to(run: EvaluationRun, trainer: Trainer, step: int, where: str) -> None:
    """Continue ``trainer`` to ``step`` within the job's time limit; an exception in the
    candidate's code or the time running out rejects it."""
    remaining = run.deadline.remaining()
    trainer.time_limit_s = (
        None if remaining is None else trainer.train_seconds + max(0.0, remaining)
    )
    try:
        trainer.run_until(step)
    except Exception as exc:
        if is_oom(exc):
            raise
        raise Reject(f"training on {trainer.task.name} raised {describe(exc)}") from exc
    if trainer.timed_out:
        raise Reject(
            f"time limit of {run.config.time_limit_s:g}s exceeded during {where} on "
            f"{trainer.task.name}"
        )


def initial_logits(trainer: Trainer) -> tuple[torch.Tensor, int]:
    """Logits of the trainer's network at its current weights on the first training batch,
    in training mode as the training loop runs it, leaving no trace on the run (running
    statistics and random state are restored)."""
    model, ds = trainer.model, trainer.dataset
    x = ds.train_x[: max(2, min(trainer.task.batch_size, ds.num_train))]
    saved = [b.detach().clone() for b in model.buffers()]
    devices = []
    if trainer.device.type == "cuda":
        index = trainer.device.index
        devices = [index if index is not None else torch.cuda.current_device()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            with torch.autocast(
                "cuda", dtype=torch.bfloat16, enabled=trainer.device.type == "cuda"
            ):
                logits = model(x)
            logits = logits.float()
    finally:
        with torch.no_grad():
            for b, v in zip(model.buffers(), saved, strict=True):
                b.copy_(v)
    return logits, int(x.shape[0])


def _trainability_of(run: EvaluationRun, trainer: Trainer) -> str:
    """The trainability checks on one proxy run (see :func:`trainability`)."""
    cfg, name = run.config, trainer.task.name
    try:
        logits, n = initial_logits(trainer)
    except Exception as exc:
        if is_oom(exc):
            raise
        raise Reject(f"forward pass of the {name} network raised {describe(exc)}") from exc
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).float().mean().item()
        raise Reject(f"logits at initialisation are not finite ({bad:.0%} NaN/Inf) on {name}")
    scale = logits.abs().mean().item()
    if scale > cfg.trainability_max_logit:
        raise Reject(
            f"signal explodes through the network: mean |logit| at initialisation {scale:.3g} > "
            f"{cfg.trainability_max_logit:g} on {name}"
        )
    spread = logits.std(dim=0).mean().item() if n > 1 else 0.0
    if spread < cfg.trainability_min_logit_spread:
        raise Reject(
            f"the network's output ignores its input at initialisation: logit std across {n} "
            f"inputs {spread:.3g} < {cfg.trainability_min_logit_spread:g} on {name}"
        )
    k = min(cfg.trainability_steps, trainer.task.steps)
    losses = []
    for step in range(trainer.step + 1, k + 1):  # one loss read-back per step
        train_to(run, trainer, step, Stage.TRAINABILITY)
        if trainer.diverged:
            raise Reject(
                f"training diverged (NaN/Inf loss) at step {trainer.diverged_step} on {name}"
            )
        losses.append(trainer.train_loss)
    trend = f", loss {losses[0]:.3g} -> {losses[-1]:.3g} in {k} steps" if losses else ""
    return f"{name}: logit std {spread:.3g}, mean |logit| {scale:.3g}{trend}"


@register_stage(Stage.TRAINABILITY)
def trainability(run: EvaluationRun) -> str:
    """Cheap checks on each proxy's network before real training: at initialisation the
    logits must be finite, under ``trainability_max_logit`` in mean magnitude (the signal
    does not explode through the stack) and vary across the batch by at least
    ``trainability_min_logit_spread`` (the output does not ignore the input); then the first
    ``trainability_steps`` steps must keep the loss finite."""
    build_trainers(run, reject_errors=True)
    return "; ".join(_trainability_of(run, trainer) for trainer in run.trainers)


@register_stage(Stage.QUALITY)
def quality(run: EvaluationRun) -> str:
    """Continue every proxy run to ``quality_steps``; reject when one diverged or its
    validation accuracy is under ``quality_min_accuracy``."""
    if not run.trainers:  # trainability stage skipped
        build_trainers(run, reject_errors=True)
    notes = []
    for index, trainer in enumerate(run.trainers):
        train_to(run, trainer, min(run.config.quality_steps, trainer.task.steps), Stage.QUALITY)
        res = trainer.result()
        run.quality_results[index] = res
        if res.diverged:
            raise Reject(
                f"training diverged (NaN/Inf loss) at step {res.diverged_step} on "
                f"{trainer.task.name}"
            )
        if res.val_accuracy < run.config.quality_min_accuracy:
            raise Reject(
                f"validation accuracy {res.val_accuracy:.3f} < {run.config.quality_min_accuracy:g} "
                f"on {trainer.task.name} after {res.steps} steps"
            )
        notes.append(f"{trainer.task.name}: {res.val_accuracy:.3f} after {res.steps} steps")
    return "; ".join(notes)


@register_stage(Stage.FULL)
def full(run: EvaluationRun) -> str:
    """Continue every proxy run to its full ``steps``; a diverged run rejects. A job with a
    rung stops there instead and reports (:func:`.rungs.pause_at_rung`)."""
    from layerforge.workers.rejection.rungs import pause_at_rung

    if not run.trainers:  # quality stage skipped
        build_trainers(run, reject_errors=False)
    pause_at_rung(run, train_to)
    notes = []
    for index, trainer in enumerate(run.trainers):
        train_to(run, trainer, trainer.task.steps, Stage.FULL)
        res = trainer.result()
        run.full_results[index] = res
        if res.diverged:
            raise Reject(
                f"training diverged (NaN/Inf loss) at step {res.diverged_step} on "
                f"{trainer.task.name}"
            )
        notes.append(f"{trainer.task.name}: {res.val_accuracy:.3f} after {res.steps} steps")
    return "; ".join(notes)


def proxy_results(run: EvaluationRun) -> list[dict[str, Any]]:
    """Each proxy run's latest result (full, else quality, else unevaluated progress)."""
    out = []
    for index, trainer in enumerate(run.trainers):
        res = run.full_results.get(index) or run.quality_results.get(index)
        if res is None and trainer.step > 0:
            res = trainer.result(evaluate=False)
        if res is not None:
            out.append(res.to_dict())
    return out
