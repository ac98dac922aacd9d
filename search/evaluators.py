"""Where the controller sends candidates: the Ray pool, in-process, or a zero-cost simulation.

All share one small interface (after Ray Tune's Searcher/Trial runner split):
``submit(job_id, job)``, ``poll(timeout_s) -> list[EvaluationResult]``, ``in_flight()``,
``cancel()`` and ``shutdown()``. A job is a :class:`workers.jobs.EvaluationJob` (its payload
dict is accepted too); what comes back is a :class:`workers.jobs.EvaluationResult`. The
campaign loop does not know which evaluator it talks to.

Successive halving works the same way everywhere: a job with a ``rung`` comes back with the
verdict ``"rung"`` and a checkpoint, and its continuation (the same job with the checkpoint)
is submitted like any other job.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from layerforge.workers.jobs import RUNG, Delivery, EvaluationJob, EvaluationResult, Verdict

#: What came back for one job (the name the controller and its tests have used).
Outcome = EvaluationResult


class Evaluator(Protocol):
    """The interface the campaign loop uses."""

    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Start evaluating ``job``; its outcome later comes back under ``job_id``."""

    def poll(self, timeout_s: float) -> list[EvaluationResult]:
        """Outcomes that finished (waits up to ``timeout_s`` for the first one)."""

    def in_flight(self) -> int:
        """Jobs submitted whose outcome has not been returned yet."""

    def cancel(self) -> None:
        """Abandon every job now: queued ones are dropped, running ones stopped, and no
        outcome of them is returned; the evaluator stays usable. Safe to call from another
        thread than the one polling (a cancel must reach a job the poller is blocked on)."""

    def shutdown(self) -> None:
        """Release workers."""


def evaluate_payload(job: EvaluationJob | dict[str, Any], *, device: str = "cpu") -> dict[str, Any]:
    """Run the workers' rejection protocol and full evaluation on one job, here; returns the
    verdict (with ``checkpoint`` bytes when the job stopped at its rung)."""
    from layerforge.workers.rejection import evaluate_candidate

    job = EvaluationJob.coerce(job)
    return evaluate_candidate(
        job.graph,
        job.worker_proxies(),
        job.rejection,
        seen=dict(job.known).get if job.known else None,
        device=device,
        rung=job.rung,
        checkpoint=job.checkpoint,
    )


class LocalEvaluator:
    """Evaluates in this process, one job at a time, in submission order (deterministic).

    The job runs inside :meth:`poll`, in the caller's thread, under a stop flag
    (:func:`workers.training.stop_flag`) that :meth:`cancel` sets from any thread: training
    stops at its next step and the job returns no outcome.
    """

    synchronous = True  # poll runs a job: the campaign loop stores each result at once

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.queue: deque[tuple[str, EvaluationJob]] = deque()
        self._lock = threading.Lock()
        self._running_stop: threading.Event | None = None

    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Queue a job; it runs during a later :meth:`poll`."""
        job = EvaluationJob.coerce(job)
        with self._lock:
            self.queue.append((job_id, job))

    def poll(self, timeout_s: float) -> list[EvaluationResult]:
        """Run the oldest queued job and return its outcome (none when it was cancelled)."""
        from layerforge.workers.training import TrainingStopped, stop_flag

        with self._lock:
            if not self.queue:
                return []
            job_id, job = self.queue.popleft()
            stop = self._running_stop = threading.Event()
        started = time.perf_counter()
        try:
            with stop_flag(stop):
                verdict = evaluate_payload(job, device=self.device)
            outcome = EvaluationResult.from_worker(
                job_id, verdict, worker="local", seconds=time.perf_counter() - started
            )
        except TrainingStopped:
            return []
        except Exception as err:  # noqa: BLE001 - a crashing evaluation is an outcome
            outcome = EvaluationResult(
                job_id, str(Delivery.FAILED), error=f"{type(err).__name__}: {err}"
            )
        finally:
            with self._lock:
                self._running_stop = None
        # a job cancelled after its last training step (while it was being evaluated)
        return [] if stop.is_set() else [outcome]

    def in_flight(self) -> int:
        """Queued jobs."""
        return len(self.queue)

    def cancel(self) -> None:
        """Drop the queued jobs and stop the running one at its next training step."""
        with self._lock:
            self.queue.clear()
            if self._running_stop is not None:
                self._running_stop.set()

    def shutdown(self) -> None:
        """Nothing to release."""
        self.cancel()


def _simulated_checkpoint(rungs: list[dict[str, Any]]) -> bytes:
    """The simulated evaluator's checkpoint: the rungs its run reached, as JSON bytes."""
    import json

    return json.dumps(rungs).encode()


def _simulated_rungs(checkpoint: bytes | None) -> list[dict[str, Any]]:
    """The rungs a simulated checkpoint holds (none for a fresh job)."""
    import json

    return [] if checkpoint is None else list(json.loads(checkpoint.decode()))


@dataclass
class SimulatedEvaluator:
    """Evaluator for controller benchmarks and tests: results from the fingerprint, no training.

    Accuracy per proxy is a deterministic pseudo-random number derived from the graph's
    fingerprint, so the same function always scores the same. ``workers`` bounds how many
    jobs are in flight at once, as a cluster of that many workers would. ``seconds`` is how
    long each evaluation takes (0: it finishes at the next poll), so ``workers / seconds``
    candidates per second model a cluster's pace rather than the controller's top speed.
    ``describe`` adds the formula (``latex``) to each result as real workers do; that costs
    this process's CPU (SymPy, docs/measurements.md), work a real cluster does elsewhere, so
    it is off where the controller's own speed is measured.
    """

    workers: int = 1000
    reject_fraction: float = 0.3
    seconds: float = 0.0
    describe: bool = False
    pending: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Accept a job; it finishes ``seconds`` from now (at the first poll after that)."""
        job = EvaluationJob.coerce(job)
        with self._lock:
            self.pending.append((time.monotonic() + self.seconds, job_id, job))

    def poll(self, timeout_s: float) -> list[EvaluationResult]:
        """Finish every job that is due, waiting up to ``timeout_s`` for the next one."""
        if self.pending and timeout_s:
            wait = self.pending[0][0] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout_s))
        done = []
        now = time.monotonic()
        while True:
            with self._lock:
                if not self.pending or self.pending[0][0] > now:
                    break
                _, job_id, job = self.pending.popleft()
            result = self._verdict(job)
            if self.describe:
                from layerforge.grammar import formula_latex

                result["latex"] = formula_latex(job.graph)
            done.append(EvaluationResult.from_worker(job_id, result, worker="simulated"))
        if not done and timeout_s:
            time.sleep(min(timeout_s, 0.001))
        return done

    def _verdict(self, job: EvaluationJob) -> dict[str, Any]:
        """The simulated verdict of ``job``: rejected, completed, or (a job with a rung below
        its proxies' steps) ``rung`` with a partial accuracy that grows toward the final one
        as a real run's does, and a token checkpoint its continuation goes on from."""
        from layerforge.grammar import Graph, fingerprint

        fp = fingerprint(Graph.from_dict(job.graph))
        digest = hashlib.sha256(f"{fp}:{job.seed}".encode()).digest()
        score = digest[0] / 255
        stages = (job.rejection or {}).get("stages", ["quality"])
        if score < self.reject_fraction and "quality" in stages and job.checkpoint is None:
            return {
                "status": Verdict.REJECTED,
                "stage": "quality",
                "reason": "simulated",
                "stages": [{"name": "quality", "seconds": 0.0, "passed": False}],
                "proxies": [],
                "costs": {},
                "fingerprint": fp,
            }
        # one byte per proxy after the first: sha256 has 32, so a spec with more
        # proxies reads on into SHAKE-256 of the digest (the first 31 stay as they were)
        count = len(job.proxies)
        stream = digest + hashlib.shake_256(digest).digest(max(0, count + 1 - len(digest)))
        final = [(stream[1 + i] / 255) * 0.9 + 0.1 for i in range(count)]
        steps = [int(p.get("steps", 1000)) for p in job.proxies]
        rungs = list(_simulated_rungs(job.checkpoint))
        if job.rung is not None and any(n > job.rung for n in steps):
            partial = [a * (0.5 + 0.5 * min(1.0, job.rung / n)) for a, n in zip(final, steps)]
            rungs.append({"step": job.rung, "accuracy": partial})
            return {
                "status": RUNG,
                "stage": "full",
                "reason": f"reached rung {job.rung}",
                "stages": [],
                "proxies": [
                    {"val_accuracy": a, "steps": min(job.rung, n)} for a, n in zip(partial, steps)
                ],
                "costs": {},
                "fingerprint": fp,
                "rung": job.rung,
                "rungs": rungs,
                "checkpoint": _simulated_checkpoint(rungs),
            }
        result: dict[str, Any] = {
            "status": Verdict.COMPLETED,
            "stage": None,
            "reason": None,
            "stages": [],
            "proxies": [{"val_accuracy": a} for a in final],
            "costs": {"runtime_ratio": 1 + digest[10] / 255, "num_params": digest[11]},
            "fingerprint": fp,
        }
        if rungs:
            result["rungs"] = rungs
        return result

    def in_flight(self) -> int:
        """Jobs accepted and not yet returned."""
        return len(self.pending)

    def cancel(self) -> None:
        """Forget every accepted job."""
        with self._lock:
            self.pending.clear()

    def shutdown(self) -> None:
        """Nothing to release."""
        self.cancel()


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
        # The pool is not thread-safe; cancel() may come from another thread than poll().
        self._lock = threading.Lock()

    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Send a job to the pool."""
        with self._lock:
            self.pool.submit(job_id, EvaluationJob.coerce(job))

    def poll(self, timeout_s: float) -> list[EvaluationResult]:
        """Outcomes the pool has finished."""
        with self._lock:
            return self.pool.poll(timeout_s)

    def in_flight(self) -> int:
        """Jobs in the pool."""
        return self.pool.in_flight()

    def cancel(self) -> None:
        """Drop the pool's queued jobs and kill (and replace) the actors running one: Ray
        cannot interrupt an actor task any other way. Waits for a poll in progress, which
        returns within its timeout."""
        with self._lock:
            self.pool.cancel_all()

    def shutdown(self) -> None:
        """Stop the pool's actors."""
        self.pool.shutdown()

    def waiting(self) -> str | None:
        """Why queued jobs are not running (no Ray node can host an actor), or None."""
        return self.pool.waiting()


class CachingEvaluator:
    """Functionally equal candidates share one result (AutoML-Zero, AQuaSurF).

    Wraps another evaluator. A job whose (fingerprint, proxies, rejection settings, seed) was
    evaluated before is answered from the cache at the next poll without training; the
    answer is exact because training is seeded by the proxies and the seed, not by the
    campaign. The cache may be shared between campaigns (``cache=`` a dict).
    """

    def __init__(self, inner: Evaluator, cache: dict[str, EvaluationResult] | None = None):
        self.inner = inner
        self.cache: dict[str, EvaluationResult] = {} if cache is None else cache
        self.keys: dict[str, str] = {}
        self.ready: deque[EvaluationResult] = deque()
        self.hits = 0

    @staticmethod
    def cache_key(job: EvaluationJob | dict[str, Any]) -> str:
        """What makes two jobs give the same final outcome (a job's rung and checkpoint do
        not: they say how far the same run has got)."""
        import json

        from layerforge.grammar import Graph, fingerprint

        job = EvaluationJob.coerce(job)
        # the same function as the job trains it: under "raw" proxies 2·relu is not relu
        raw = any(p.get("gain") == "raw" for p in job.proxies or [])
        fp = job.fingerprint or fingerprint(Graph.from_dict(job.graph), "raw" if raw else "fair")
        rest = json.dumps(
            [job.proxies, job.rejection, job.seed, job.kind],
            sort_keys=True,
            default=str,
        )
        return fp + ":" + hashlib.sha256(rest.encode()).hexdigest()[:16]

    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Answer from the cache, or pass the job on."""
        job = EvaluationJob.coerce(job)
        key = self.cache_key(job)
        known = self.cache.get(key)
        if known is not None:
            self.hits += 1
            self.ready.append(
                EvaluationResult(
                    job_id, known.status, known.result, known.error, known.attempts, "cache"
                )
            )
            return
        self.keys[job_id] = key
        self.inner.submit(job_id, job)

    def poll(self, timeout_s: float) -> list[EvaluationResult]:
        """Cached answers first, then whatever the inner evaluator finished. Final outcomes
        are cached; a rung's (a run half-way, with its checkpoint) is not."""
        if self.ready:
            done = list(self.ready)
            self.ready.clear()
            return done + self._remember(self.inner.poll(0.0))
        return self._remember(self.inner.poll(timeout_s))

    def _remember(self, done: list[EvaluationResult]) -> list[EvaluationResult]:
        """Cache the final outcomes among ``done``; returns ``done``."""
        for outcome in done:
            key = self.keys.pop(outcome.job_id, None)
            if key is not None and outcome.status == Delivery.OK and outcome.verdict != RUNG:
                self.cache[key] = outcome
        return done

    def in_flight(self) -> int:
        """Jobs waiting for an answer."""
        return len(self.ready) + self.inner.in_flight()

    def cancel(self) -> None:
        """Forget cached answers not yet returned and cancel the inner evaluator's jobs."""
        self.ready.clear()
        self.keys.clear()
        self.inner.cancel()

    def shutdown(self) -> None:
        """Shut the inner evaluator down."""
        self.inner.shutdown()

    def waiting(self) -> str | None:
        """The inner evaluator's reason for not running queued jobs, if it gives one."""
        probe = getattr(self.inner, "waiting", None)
        return probe() if callable(probe) else None
