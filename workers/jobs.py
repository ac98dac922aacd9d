"""What the controller sends a worker (:class:`EvaluationJob`) and what comes back
(:class:`EvaluationResult`): one vocabulary for every evaluator (in-process, simulated, the
Ray pool, the result cache) and for the controller.

A job's serialized form (:meth:`EvaluationJob.to_payload`) is the JSON object the controller
has always built (``graph``, ``proxies``, ``rejection``, ``seed``, ``kind``, ``campaign_id``),
plus the multi-fidelity keys when they are set (``rung``, ``checkpoint``) and the
diagnostic ``op``. The verdict a worker returns (:attr:`EvaluationResult.result`) is stored
as it is in the evaluation's ``result`` column; its shape is the rejection protocol's
(:func:`workers.rejection.evaluate_candidate`) and does not change here.

Successive halving (multi-fidelity) is a protocol between the two: a job with ``rung`` set
trains its full evaluation only up to that step, evaluates every proxy there and comes back
with the verdict ``"rung"`` (:data:`RUNG`) and a :attr:`EvaluationResult.checkpoint` (the
whole run's state as bytes). The controller compares the partial accuracy with what else
reached that rung and either stops the candidate or sends a continuation
(:meth:`EvaluationJob.continuation`): the same job with the checkpoint and the next rung,
which any worker continues from the saved step, so nothing is trained twice. The
checkpoint never enters the stored result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from layerforge.workers.errors import InvalidConfigError

__all__ = [
    "RUNG",
    "Delivery",
    "EvaluationJob",
    "EvaluationResult",
    "JobOp",
    "Verdict",
]


class Verdict(StrEnum):
    """What the workers concluded about a candidate (a result's ``status``): it passed every
    stage, a stage rejected it, the job could not run, or it stopped at its ``rung`` and
    waits for the controller's decision (successive halving)."""

    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    RUNG = "rung"


#: The verdict of a job that stopped at its ``rung`` and waits for the controller's decision.
RUNG = Verdict.RUNG


class JobOp(StrEnum):
    """What a worker does with a job: evaluate a candidate, or (diagnostics) sleep."""

    EVALUATE = "evaluate"
    SLEEP = "sleep"


class Delivery(StrEnum):
    """How a job came back: the worker returned a verdict (``ok``), the job ran past its
    timeout and was killed, or it failed (a crash, a lost worker): no verdict then."""

    OK = "ok"
    TIMEOUT = "timeout"
    FAILED = "failed"


_PAYLOAD_KEYS = frozenset(
    {
        "graph",
        "proxies",
        "rejection",
        "seed",
        "kind",
        "campaign_id",
        "fingerprint",
        "known",
        "rung",
        "checkpoint",
        "op",
        "seconds",
    }
)


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation a worker runs.

    ``graph`` is the candidate in any form :func:`workers.candidates.resolve_candidate`
    accepts (a graph dict, ``{"builtin": name}``, ``{"text", "space"}``, or a
    :class:`workers.candidates.Candidate` in-process); ``proxies`` are the proxy task dicts
    and ``rejection`` the protocol's settings (:class:`workers.rejection.RejectionConfig`
    fields). ``seed`` is added to every proxy's own seed (the transfer stage's repeated runs
    train differently; search evaluations use 0). ``known`` maps fingerprints to earlier
    results (the duplicate stage reuses them). ``rung``: train the full evaluation only up
    to this step and report (see the module docstring); ``checkpoint``: continue the run an
    earlier rung saved. ``op="sleep"`` sleeps ``seconds`` (pool diagnostics).
    """

    graph: Any = None
    proxies: list[dict[str, Any]] = field(default_factory=list)
    rejection: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    kind: str = "search"
    campaign_id: int | None = None
    fingerprint: str | None = None
    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    rung: int | None = None
    checkpoint: bytes | None = None
    op: JobOp = JobOp.EVALUATE
    seconds: float = 0.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "op", JobOp(self.op))
        except ValueError:
            valid = ", ".join(o.value for o in JobOp)
            raise InvalidConfigError("op", f"unknown op {self.op!r}; valid ops: {valid}") from None
        if self.op is JobOp.SLEEP:
            return
        if self.graph is None:
            raise InvalidConfigError("graph", "a job must name its candidate")
        if not isinstance(self.proxies, list):
            raise InvalidConfigError("proxies", "must be a list of proxy tasks")
        if self.rejection is not None and not isinstance(self.rejection, dict):
            raise InvalidConfigError("rejection", "must be an object of rejection settings")
        if self.rung is not None and (
            isinstance(self.rung, bool) or not isinstance(self.rung, int) or self.rung < 1
        ):
            raise InvalidConfigError("rung", f"must be a step count >= 1, got {self.rung!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, bytes):
            raise InvalidConfigError("checkpoint", "must be the bytes a rung result carried")

    @classmethod
    def sleep(cls, seconds: float) -> EvaluationJob:
        """A diagnostic job that only sleeps (tests of the pool's timeouts and cancels)."""
        return cls(op=JobOp.SLEEP, seconds=float(seconds))

    @classmethod
    def coerce(cls, job: EvaluationJob | dict[str, Any]) -> EvaluationJob:
        """``job`` itself, or the job its payload dict describes (:meth:`from_payload`)."""
        return job if isinstance(job, EvaluationJob) else cls.from_payload(job)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> EvaluationJob:
        """The job of a serialized payload (:meth:`to_payload`); an unknown key is an error
        that names it and the valid ones."""
        if not isinstance(payload, dict):
            raise InvalidConfigError("payload", f"must be an object, got {type(payload).__name__}")
        unknown = sorted(set(payload) - _PAYLOAD_KEYS)
        if unknown:
            raise InvalidConfigError(
                unknown[0], f"unknown job field; valid fields: {', '.join(sorted(_PAYLOAD_KEYS))}"
            )
        values = {k: v for k, v in payload.items() if v is not None}
        values["proxies"] = list(values.get("proxies") or [])
        values["rejection"] = dict(values.get("rejection") or {})
        values["known"] = dict(values.get("known") or {})
        return cls(**values)

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready form (the multi-fidelity keys only when set)."""
        if self.op is JobOp.SLEEP:
            return {"op": str(self.op), "seconds": self.seconds}
        out: dict[str, Any] = {
            "graph": self.graph,
            "proxies": self.proxies,
            "rejection": self.rejection,
            "seed": self.seed,
            "kind": self.kind,
            "campaign_id": self.campaign_id,
        }
        for name in ("fingerprint", "rung", "checkpoint"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.known:
            out["known"] = self.known
        return out

    def worker_proxies(self) -> list[dict[str, Any]]:
        """The proxies as the worker trains them: ``seed`` added to each proxy's own seed."""
        return [dict(p, seed=self.seed + int(p.get("seed", 0))) for p in self.proxies]

    def with_time_limit(self, seconds: float) -> EvaluationJob:
        """This job with ``time_limit_s`` set in its rejection settings, unless it has one."""
        if self.op is not JobOp.EVALUATE or (self.rejection or {}).get("time_limit_s") is not None:
            return self
        return dataclasses.replace(
            self, rejection={**(self.rejection or {}), "time_limit_s": seconds}
        )

    def continuation(self, checkpoint: bytes, rung: int | None) -> EvaluationJob:
        """The job that continues this one's run from ``checkpoint`` to ``rung`` (None: to
        the end of the full evaluation)."""
        return dataclasses.replace(self, checkpoint=checkpoint, rung=rung)


@dataclass
class EvaluationResult:
    """What came back for one job.

    ``status`` is the :class:`Delivery` (``ok``: ``result`` holds the worker's verdict,
    stored as it is; otherwise ``error`` says what happened). ``worker`` names who ran it
    (a Ray actor id, ``"simulated"``, ``"cache"``), ``attempts`` how many times it was
    started, ``seconds`` how long its last attempt ran. ``checkpoint`` is the run's state
    when the verdict is :data:`RUNG`; it is kept apart from ``result`` so it is never
    stored.
    """

    job_id: str
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1
    worker: str | None = None
    seconds: float = 0.0
    checkpoint: bytes | None = None

    @classmethod
    def from_worker(cls, job_id: str, result: dict[str, Any], **extra: Any) -> EvaluationResult:
        """A delivered verdict; a checkpoint the worker put in it is moved out of it."""
        result = dict(result)
        checkpoint = result.pop("checkpoint", None)
        return cls(job_id, str(Delivery.OK), result, checkpoint=checkpoint, **extra)

    @property
    def verdict(self) -> str | None:
        """The worker's verdict (``completed``, ``rejected``, ``failed``, ``rung``), or None
        when no verdict came back."""
        if self.status != Delivery.OK or not self.result:
            return None
        return self.result.get("status")

    @property
    def at_rung(self) -> bool:
        """True when the job paused at a rung and waits for a continue-or-stop decision."""
        return self.verdict == RUNG and self.checkpoint is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready fields (without the checkpoint's bytes)."""
        out = dataclasses.asdict(self)
        out["checkpoint"] = None if self.checkpoint is None else len(self.checkpoint)
        return out
