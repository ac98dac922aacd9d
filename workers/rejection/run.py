"""The state of one evaluation as it goes through the stages, and the stages' verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from layerforge.workers.rejection.config import RejectionConfig

if TYPE_CHECKING:
    from layerforge.workers.candidates import Candidate
    from layerforge.workers.datasets import DatasetCache
    from layerforge.workers.tasks import ProxyTask
    from layerforge.workers.training import Trainer, TrainResult

__all__ = [
    "Deadline",
    "EvaluationRun",
    "Fail",
    "Reject",
    "StageVerdict",
    "describe",
    "is_oom",
    "release_memory",
]


class Reject(Exception):
    """A stage's negative verdict: the candidate is rejected with this reason."""


class Fail(Exception):
    """A failure that is not the candidate's fault (bad input, missing dependency)."""


@dataclass
class StageVerdict:
    """What one stage decided, why, and what it cost."""

    name: str
    passed: bool
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with the evaluation."""
        return {
            "name": self.name,
            "seconds": round(self.seconds, 6),
            "passed": self.passed,
            "reason": self.reason,
        }


class Deadline:
    """The job's time limit (None: no limit), counted from construction."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.start = time.perf_counter()

    def remaining(self) -> float | None:
        """Seconds left, or None without a limit."""
        return None if self.limit is None else self.limit - (time.perf_counter() - self.start)

    def check(self, where: str) -> None:
        """Reject once the limit has passed, naming what was running."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise Reject(f"time limit of {self.limit:g}s exceeded during {where}")


@dataclass
class EvaluationRun:
    """One candidate's evaluation: its inputs, and what the stages found so far.

    ``candidate_spec`` is the candidate as it arrived (any form
    :func:`workers.candidates.resolve_candidate` accepts); ``candidate`` is set by the static stage (resolving the candidate is part of it);
    ``layer_factory`` is what the proxies train: the candidate's own factory, or its
    gain-normalized form (see :mod:`workers.gain`) from the probe stage on. ``trainers`` are
    the proxy runs the trainability stage starts and the quality and full stages continue;
    ``quality_results`` / ``full_results`` hold their results by trainer index.
    ``pause_at``: the rung (a step of the full evaluation) at which the full stage stops and
    reports (successive halving, :mod:`.rungs`); ``rungs`` lists the rungs this run reached,
    ``{"step", "accuracy": [one per proxy]}``, carried from checkpoint to checkpoint.
    """

    candidate_spec: Any
    tasks: list[ProxyTask]
    config: RejectionConfig
    device: torch.device
    deadline: Deadline
    seen: Callable[[str], dict[str, Any] | None] | None = None
    datasets_cache: DatasetCache | None = None
    candidate: Candidate | None = None
    layer_factory: Callable[[int], torch.nn.Module] | None = None
    gain: dict[str, Any] | None = None
    fingerprint: str | None = None
    earlier: dict[str, Any] | None = None
    costs: dict[str, Any] = field(
        default_factory=lambda: {"runtime_ratio": None, "num_params": None}
    )
    trainers: list[Trainer] = field(default_factory=list)
    quality_results: dict[int, TrainResult] = field(default_factory=dict)
    full_results: dict[int, TrainResult] = field(default_factory=dict)
    verdicts: list[StageVerdict] = field(default_factory=list)
    pause_at: int | None = None
    rungs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cand(self) -> Candidate:
        """The resolved candidate (the static stage resolves it before any other runs)."""
        if self.candidate is None:  # pragma: no cover - the protocol always resolves first
            raise RuntimeError("the candidate is resolved by the static stage")
        return self.candidate

    @property
    def factory(self) -> Callable[[int], torch.nn.Module]:
        """The layer factory the proxies train (gain-normalized where the mode says so)."""
        return self.layer_factory if self.layer_factory is not None else self.cand.factory

    @property
    def archs(self) -> set[str]:
        """The architectures of the job's proxies (the probe shapes follow them)."""
        return {t.arch for t in self.tasks}


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CPU or CUDA)."""
    oom_types = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t is not None
    )
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
    )


def release_memory(device: torch.device) -> None:
    """Return cached accelerator memory after a failed or finished evaluation."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for a verdict."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg[:300]}" if msg else type(exc).__name__
