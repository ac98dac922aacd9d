"""Where the controller sends candidates: the Ray pool, in-process, or a zero-cost simulation.

All three share one small interface (after Ray Tune's Searcher/Trial runner split):
``submit(job_id, payload)``, ``poll(timeout_s) -> list[Outcome]``, ``in_flight()`` and
``shutdown()``. A payload is JSON: ``{"graph", "proxies", "rejection", "seed", "kind"}``.
The campaign loop does not know which evaluator it talks to.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Outcome:
    """What came back for one job: a result dict (``status`` ok) or an error."""

    job_id: str
    status: str  # "ok" | "timeout" | "failed"
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 1
    worker: str | None = None


class Evaluator(Protocol):
    """The interface the campaign loop uses."""

    def submit(self, job_id: str, payload: dict[str, Any]) -> None:
        """Start evaluating ``payload``; its outcome later comes back under ``job_id``."""

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Outcomes that finished (waits up to ``timeout_s`` for the first one)."""

    def in_flight(self) -> int:
        """Jobs submitted whose outcome has not been returned yet."""

    def shutdown(self) -> None:
        """Release workers."""


def worker_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Translate a controller payload into the workers' job: candidate, proxies, config.

    The payload's ``seed`` is added to every proxy's own seed, so the transfer stage's
    repeated runs (seeds 0, 1, 2, ...) train differently while search evaluations (seed 0)
    train exactly as the proxy says.
    """
    seed = int(payload.get("seed", 0))
    proxies = [dict(p, seed=seed + int(p.get("seed", 0))) for p in payload["proxies"]]
    return {
        "candidate": payload["graph"],
        "proxies": proxies,
        "config": payload.get("rejection") or {},
    }


def evaluate_payload(payload: dict[str, Any], *, device: str = "cpu") -> dict[str, Any]:
    """Run the workers' rejection protocol and full evaluation on one payload, here."""
    from layerforge.workers.rejection import evaluate_candidate

    job = worker_job(payload)
    return evaluate_candidate(job["candidate"], job["proxies"], job["config"], device=device)


class LocalEvaluator:
    """Evaluates in this process, one job at a time, in submission order (deterministic)."""

    synchronous = True  # poll runs a job: the campaign loop stores each result at once

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()

    def submit(self, job_id: str, payload: dict[str, Any]) -> None:
        """Queue a job; it runs during a later :meth:`poll`."""
        self.queue.append((job_id, payload))

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Run the oldest queued job and return its outcome."""
        if not self.queue:
            return []
        job_id, payload = self.queue.popleft()
        try:
            return [Outcome(job_id, "ok", evaluate_payload(payload, device=self.device))]
        except Exception as err:  # noqa: BLE001 - a crashing evaluation is an outcome
            return [Outcome(job_id, "failed", error=f"{type(err).__name__}: {err}")]

    def in_flight(self) -> int:
        """Queued jobs."""
        return len(self.queue)

    def shutdown(self) -> None:
        """Nothing to release."""
        self.queue.clear()


@dataclass
class SimulatedEvaluator:
    """Evaluator for controller benchmarks and tests: results from the fingerprint, no training.

    Accuracy per proxy is a deterministic pseudo-random number derived from the graph's
    fingerprint, so the same function always scores the same. ``workers`` bounds how many
    jobs are in flight at once, as a cluster of that many workers would. ``seconds`` is how
    long each evaluation takes (0: it finishes at the next poll), so ``workers / seconds``
    candidates per second model a cluster's pace rather than the controller's top speed.
    ``describe`` adds the formula (``latex``) to each result as real workers do; it costs
    2-4 ms of this process's CPU per activation graph, work a real cluster does elsewhere, so
    it is off where the controller's own speed is measured.
    """

    workers: int = 1000
    reject_fraction: float = 0.3
    seconds: float = 0.0
    describe: bool = False
    pending: deque = field(default_factory=deque)

    def submit(self, job_id: str, payload: dict[str, Any]) -> None:
        """Accept a job; it finishes ``seconds`` from now (at the first poll after that)."""
        self.pending.append((time.monotonic() + self.seconds, job_id, payload))

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Finish every job that is due, waiting up to ``timeout_s`` for the next one."""
        from layerforge.grammar import Graph, fingerprint

        if self.pending and timeout_s:
            wait = self.pending[0][0] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout_s))
        done = []
        now = time.monotonic()
        while self.pending and self.pending[0][0] <= now:
            _, job_id, payload = self.pending.popleft()
            fp = fingerprint(Graph.from_dict(payload["graph"]))
            digest = hashlib.sha256(f"{fp}:{payload.get('seed', 0)}".encode()).digest()
            score = digest[0] / 255
            stages = (payload.get("rejection") or {}).get("stages", ["quality"])
            result: dict[str, Any]
            if score < self.reject_fraction and "quality" in stages:
                result = {
                    "status": "rejected",
                    "stage": "quality",
                    "reason": "simulated",
                    "stages": [{"name": "quality", "seconds": 0.0, "passed": False}],
                    "proxies": [],
                    "costs": {},
                    "fingerprint": fp,
                }
            else:
                # one byte per proxy after the first: sha256 has 32, so a spec with more
                # proxies reads on into SHAKE-256 of the digest (the first 31 stay as they were)
                count = len(payload["proxies"])
                stream = digest + hashlib.shake_256(digest).digest(max(0, count + 1 - len(digest)))
                proxies = [
                    {"val_accuracy": (stream[1 + i] / 255) * 0.9 + 0.1} for i in range(count)
                ]
                result = {
                    "status": "completed",
                    "stage": None,
                    "reason": None,
                    "stages": [],
                    "proxies": proxies,
                    "costs": {"runtime_ratio": 1 + digest[10] / 255, "num_params": digest[11]},
                    "fingerprint": fp,
                }
            if self.describe:
                from layerforge.grammar import formula_latex

                result["latex"] = formula_latex(payload["graph"])
            done.append(Outcome(job_id, "ok", result, worker="simulated"))
        if not done and timeout_s:
            time.sleep(min(timeout_s, 0.001))
        return done

    def in_flight(self) -> int:
        """Jobs accepted and not yet returned."""
        return len(self.pending)

    def shutdown(self) -> None:
        """Nothing to release."""
        self.pending.clear()


class RayEvaluator:
    """The :class:`workers.pool.EvaluatorPool` on Ray (local, or the cluster at RAY_ADDRESS)."""

    def __init__(
        self,
        *,
        num_actors: int = 2,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        task_timeout_s: float = 1800.0,
        ray_address: str | None = None,
    ):
        from layerforge.workers.pool import EvaluatorPool

        self.pool = EvaluatorPool(
            num_actors,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            task_timeout_s=task_timeout_s,
            ray_address=ray_address,
        )

    def submit(self, job_id: str, payload: dict[str, Any]) -> None:
        """Send a job to the pool."""
        self.pool.submit(job_id, worker_job(payload))

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Outcomes the pool has finished."""
        return [
            Outcome(
                r.job_id,
                r.status,
                r.result,
                r.error,
                getattr(r, "attempts", 1),
                getattr(r, "actor_id", None),
            )
            for r in self.pool.poll(timeout_s)
        ]

    def in_flight(self) -> int:
        """Jobs in the pool."""
        return self.pool.in_flight()

    def shutdown(self) -> None:
        """Stop the pool's actors."""
        self.pool.shutdown()


class CachingEvaluator:
    """Functionally equal candidates share one result (AutoML-Zero, AQuaSurF).

    Wraps another evaluator. A job whose (fingerprint, proxies, rejection settings, seed) was
    evaluated before is answered from the cache at the next poll without training; the
    answer is exact because training is seeded by the proxies and the seed, not by the
    campaign. The cache may be shared between campaigns (``cache=`` a dict).
    """

    def __init__(self, inner: Evaluator, cache: dict[str, Outcome] | None = None):
        self.inner = inner
        self.cache: dict[str, Outcome] = {} if cache is None else cache
        self.keys: dict[str, str] = {}
        self.ready: deque[Outcome] = deque()
        self.hits = 0

    @staticmethod
    def cache_key(payload: dict[str, Any]) -> str:
        """What makes two jobs give the same outcome."""
        import json

        from layerforge.grammar import Graph, fingerprint

        fp = payload.get("fingerprint") or fingerprint(Graph.from_dict(payload["graph"]))
        rest = json.dumps(
            [
                payload.get("proxies"),
                payload.get("rejection"),
                payload.get("seed", 0),
                payload.get("kind", "search"),
            ],
            sort_keys=True,
            default=str,
        )
        return fp + ":" + hashlib.sha256(rest.encode()).hexdigest()[:16]

    def submit(self, job_id: str, payload: dict[str, Any]) -> None:
        """Answer from the cache, or pass the job on."""
        key = self.cache_key(payload)
        known = self.cache.get(key)
        if known is not None:
            self.hits += 1
            self.ready.append(
                Outcome(job_id, known.status, known.result, known.error, known.attempts, "cache")
            )
            return
        self.keys[job_id] = key
        self.inner.submit(job_id, payload)

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Cached answers first, then whatever the inner evaluator finished."""
        if self.ready:
            done = list(self.ready)
            self.ready.clear()
            return done + self.inner.poll(0.0)
        done = self.inner.poll(timeout_s)
        for outcome in done:
            key = self.keys.pop(outcome.job_id, None)
            if key is not None and outcome.status == "ok":
                self.cache[key] = outcome
        return done

    def in_flight(self) -> int:
        """Jobs waiting for an answer."""
        return len(self.ready) + self.inner.in_flight()

    def shutdown(self) -> None:
        """Shut the inner evaluator down."""
        self.inner.shutdown()
