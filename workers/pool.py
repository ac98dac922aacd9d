"""``EvaluatorPool``: Ray actors that evaluate candidates, with timeouts, retries and streaming.

Each :class:`EvaluatorActor` owns a device (a GPU share when ``num_gpus > 0``, else CPU) and
a :class:`~workers.datasets.DatasetCache`, so a dataset is loaded once per actor and then
reused by every task it runs. The pool gives each actor one task at a time (so a task's clock
starts when it actually starts), keeps the rest queued, and streams results back as they
finish (in the spirit of Ray Tune's driver loop):

- ``submit(job_id, job)``: queue one :class:`~workers.jobs.EvaluationJob` (or its payload
  dict, :meth:`~workers.jobs.EvaluationJob.from_payload`); ``EvaluationJob.sleep(s)`` is
  the diagnostic job. A job with a ``rung`` comes back at that rung with its checkpoint;
  its continuation may run on any actor (the checkpoint travels with the job).
- ``poll(timeout_s)``: wait up to ``timeout_s`` for at least one result; return every
  result that is ready (possibly none) as :class:`~workers.jobs.EvaluationResult`.
- A task whose actor dies (``RayActorError``/``ActorDiedError``, e.g. ``ray.kill`` or a
  crashed process) is retried on a fresh actor, up to ``max_retries`` times; the dead actor is
  replaced. A task lost with its *node* (the raylet died: ``ActorUnavailableError``, a
  preempted node, or a node the cluster reports dead) is not the candidate's fault: it is
  re-queued without using up a retry (at most ``MAX_NODE_LOSSES`` times), and the other idle
  actors of that node are replaced before they are given work. Replacements that no node can
  host yet stay pending in Ray (no resubmit loop) and :meth:`EvaluatorPool.waiting` says so.
- A task running longer than ``task_timeout_s`` is stopped by killing its actor (Ray cannot
  force-cancel an actor task), reported with status ``"timeout"``, and the actor is
  replaced; the pool keeps working.
- Each result records where it ran: ``result["node"] = {"node_id", "node_ip", "hostname",
  "actor_id", "pid"}`` from the actor's Ray runtime context.
- With ``soft_time_limit`` (default), an evaluation whose rejection settings have no ``time_limit_s`` gets
  ``0.8 * task_timeout_s``, so a slow candidate usually ends as a recorded
  ``rejected: time limit`` verdict before the hard timeout has to kill anything.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

import ray

from layerforge.workers.errors import InvalidConfigError
from layerforge.workers.jobs import Delivery, EvaluationJob, EvaluationResult, JobOp, Verdict

__all__ = ["MAX_NODE_LOSSES", "EvaluatorActor", "EvaluatorPool", "PoolResult", "ray_connect"]

#: The pool's results are the workers' :class:`EvaluationResult` (the name tests and
#: benchmarks have used).
PoolResult = EvaluationResult

log = logging.getLogger(__name__)

#: Times one job may be re-queued because the node under its actor died (not counted as a
#: retry: a lost node says nothing about the candidate), before it fails like a crash.
MAX_NODE_LOSSES = 10
#: Seconds every actor must have been unable to start, with work queued, before
#: :meth:`EvaluatorPool.waiting` reports it (actors take a few seconds to start normally).
WAITING_AFTER_S = 3.0


def ray_connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect this process to Ray through its one owner (:mod:`workers.ray_session`): join
    ``address`` when given, else start a new local Ray (dashboard off, usage stats off).
    A cluster with token authentication is joined with the token of ``RAY_AUTH_TOKEN``."""
    from layerforge.workers.ray_session import RaySettings, auth_token_from_env, connect

    connect(
        RaySettings(
            address=address or None,
            auth_token=auth_token_from_env(),
            init_kwargs=dict(init_kwargs),
        )
    )


@ray.remote(concurrency_groups={"control": 1})
class EvaluatorActor:
    """Runs evaluations one at a time on its device; answers ``stats`` even while busy."""

    def __init__(self, actor_id: str, num_cpus: float = 1, use_gpu: bool = False):
        import socket

        import torch

        from layerforge.workers.datasets import DatasetCache

        torch.set_num_threads(max(1, int(num_cpus)))
        self.actor_id = actor_id
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.cache = DatasetCache()
        self.tasks = 0
        self.host = socket.gethostname()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.node_ip = ray.util.get_node_ip_address()

    def evaluate(self, job: EvaluationJob) -> dict[str, Any]:
        """Run one job here; returns ``{"result": the verdict, "stats": this actor's}``."""
        from layerforge.workers.rejection import evaluate_candidate

        self.tasks += 1
        result: dict[str, Any]
        if job.op is JobOp.SLEEP:
            time.sleep(job.seconds)
            result = {"status": Verdict.COMPLETED, "slept": job.seconds}
        else:
            result = evaluate_candidate(
                job.graph,
                job.worker_proxies(),
                job.rejection,
                seen=dict(job.known).get,
                device=self.device,
                datasets_cache=self.cache,
                rung=job.rung,
                checkpoint=job.checkpoint,
            )
        result["node"] = self._node()
        return {"result": result, "stats": self._stats()}

    def _node(self) -> dict[str, Any]:
        """Where this actor runs: the Ray node (id and IP), the host and the process."""
        return {
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "hostname": self.host,
            "actor_id": self.actor_id,
            "pid": os.getpid(),
        }

    def _stats(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "pid": os.getpid(),
            "host": self.host,
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "device": self.device,
            "tasks": self.tasks,
            "loads": self.cache.load_counts(),
        }

    @ray.method(concurrency_group="control")
    def stats(self) -> dict[str, Any]:
        return self._stats()


@dataclass
class _Job:
    job_id: str
    job: EvaluationJob
    attempts: int = 0
    lost: int = 0  # attempts that ended with their node's death (not counted as retries)
    submitted: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Slot:
    actor_id: str
    handle: Any
    job: _Job | None = None
    ref: Any = None
    started: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    ready_ref: Any = None  # the first stats() call: done once the actor has started


class EvaluatorPool:
    """A fixed-size pool of :class:`EvaluatorActor` (see the module docstring)."""

    def __init__(
        self,
        num_actors: int = 2,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        task_timeout_s: float = 3600.0,
        max_retries: int = 2,
        ray_address: str | None = None,
        soft_time_limit: bool = True,
    ):
        if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
            raise InvalidConfigError("num_actors", f"must be an integer >= 1, got {num_actors!r}")
        if not num_cpus > 0:
            raise InvalidConfigError("num_cpus", f"must be > 0, got {num_cpus!r}")
        if num_gpus < 0:
            raise InvalidConfigError("num_gpus", f"must be >= 0, got {num_gpus!r}")
        if not task_timeout_s > 0:
            raise InvalidConfigError("task_timeout_s", f"must be > 0, got {task_timeout_s!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidConfigError("max_retries", f"must be an integer >= 0, got {max_retries!r}")
        ray_connect(ray_address)
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.task_timeout_s = float(task_timeout_s)
        self.max_retries = max_retries
        self.soft_time_limit = soft_time_limit
        self._ids = itertools.count()
        self._slots: list[_Slot] = [self._new_slot() for _ in range(num_actors)]
        self._retired: dict[str, dict[str, Any]] = {}
        self._pending: deque[_Job] = deque()
        self._ready: deque[EvaluationResult] = deque()
        self._job_ids: set[str] = set()
        self._closed = False
        self._starved_since: float | None = None  # work queued and no actor able to run it
        self._cluster_cpus: tuple[float, float, float] | None = None  # (when, free, total)

    # ------------------------------------------------------------------ actors
    def _new_slot(self) -> _Slot:
        actor_id = f"actor-{next(self._ids)}"
        handle = EvaluatorActor.options(  # type: ignore[attr-defined]  # added by @ray.remote
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            max_restarts=0,
            max_task_retries=0,
            name=None,
        ).remote(actor_id, self.num_cpus, self.num_gpus > 0)
        return _Slot(actor_id=actor_id, handle=handle, ready_ref=handle.stats.remote())

    def _is_ready(self, slot: _Slot) -> bool:
        """True once the actor has started (its task clock must not include start-up)."""
        if slot.ready_ref is None:
            return True
        done, _ = ray.wait([slot.ready_ref], timeout=0)
        if not done:
            return False
        try:
            slot.stats = dict(ray.get(slot.ready_ref))
        except Exception as exc:  # noqa: BLE001 - the actor could not start
            log.warning("actor %s failed to start (%s); replacing it", slot.actor_id, exc)
            self._replace(slot, kill=True)
            return False
        slot.ready_ref = None
        return True

    def _replace(self, slot: _Slot, *, kill: bool) -> None:
        if kill:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already dead
                log.debug("killing %s: %s", slot.actor_id, exc)
        self._retired[slot.actor_id] = {
            **slot.stats,
            "actor_id": slot.actor_id,
            "alive": False,
        }
        new = self._new_slot()
        idx = next(i for i, s in enumerate(self._slots) if s is slot)
        self._slots[idx] = new
        log.info("replaced %s with %s", slot.actor_id, new.actor_id)

    @property
    def actors(self) -> list[Any]:
        """Handles of the live actors (tests kill one with ``ray.kill``)."""
        return [s.handle for s in self._slots]

    def actor_ids(self) -> list[str]:
        return [s.actor_id for s in self._slots]

    # ------------------------------------------------------------------ jobs
    def submit(self, job_id: str, job: EvaluationJob | dict[str, Any]) -> None:
        """Queue ``job`` (an :class:`EvaluationJob` or its payload dict) under ``job_id``."""
        if self._closed:
            raise RuntimeError("the pool is shut down")
        if not isinstance(job_id, str) or not job_id:
            raise InvalidConfigError("job_id", "must be a non-empty string")
        if job_id in self._job_ids:
            raise InvalidConfigError("job_id", f"{job_id!r} is already in flight")
        job = EvaluationJob.coerce(job)
        if self.soft_time_limit:
            job = job.with_time_limit(0.8 * self.task_timeout_s)
        self._job_ids.add(job_id)
        self._pending.append(_Job(job_id, job))
        self._dispatch()

    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by :meth:`poll` (queued, running or ready)."""
        return len(self._job_ids)

    def _dispatch(self) -> None:
        for slot in list(self._slots):
            if not self._pending:
                return
            if slot.job is None and self._is_ready(slot):
                job = self._pending.popleft()
                job.attempts += 1
                slot.job = job
                slot.started = time.monotonic()
                slot.ref = slot.handle.evaluate.remote(job.job)

    def _finish(self, slot: _Slot, status: str, result=None, error=None) -> None:
        job = slot.job
        assert job is not None
        seconds = time.monotonic() - slot.started
        if result is not None:
            done = EvaluationResult.from_worker(
                job.job_id, result, attempts=job.attempts, worker=slot.actor_id, seconds=seconds
            )
        else:
            done = EvaluationResult(
                job.job_id,
                status,
                error=error,
                attempts=job.attempts,
                worker=slot.actor_id,
                seconds=seconds,
            )
        self._ready.append(done)
        slot.job, slot.ref = None, None

    def _collect(self, slot: _Slot) -> None:
        job = slot.job
        assert job is not None, "only busy slots are collected"
        try:
            out = ray.get(slot.ref)
        except (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        ) as exc:
            died = slot.actor_id
            node_id = slot.stats.get("node_id")
            slot.job, slot.ref = None, None
            self._replace(slot, kill=True)
            if self._lost_with_node(exc, node_id) and job.lost < MAX_NODE_LOSSES:
                job.lost += 1
                log.warning(
                    "actor %s was lost with its node %s running %s; re-queued",
                    died,
                    node_id,
                    job.job_id,
                )
                self._pending.appendleft(job)
                self._replace_idle_on(node_id)
            elif job.attempts - job.lost <= self.max_retries:
                log.warning("actor %s died running %s; retrying", died, job.job_id)
                self._pending.appendleft(job)
            else:
                self._ready.append(
                    EvaluationResult(
                        job.job_id,
                        str(Delivery.FAILED),
                        error=f"actor died {job.attempts} time(s): {type(exc).__name__}: {exc}"[
                            :2000
                        ],
                        attempts=job.attempts,
                        worker=died,
                    )
                )
            return
        except ray.exceptions.RayTaskError as exc:  # the task raised; the actor lives on
            self._finish(slot, str(Delivery.FAILED), error=f"{type(exc).__name__}: {exc}"[:4000])
            return
        slot.stats = dict(out.get("stats") or {})
        self._finish(slot, str(Delivery.OK), result=out.get("result") or {})

    def _lost_with_node(self, exc: BaseException, node_id: str | None) -> bool:
        """True when the actor died because its node did (the raylet is gone), not because of
        what it ran: Ray reports a vanished node's actors as unavailable (the connection
        closed), a drained one as preempted; otherwise ask the cluster about the node."""
        if isinstance(exc, ray.exceptions.ActorUnavailableError):
            return True
        if getattr(exc, "preempted", False):
            return True
        if not node_id:
            return False
        try:
            alive = {n["NodeID"]: bool(n.get("Alive")) for n in ray.nodes()}
        except Exception:  # noqa: BLE001 - the cluster cannot say: treat it as a crash
            return False
        return not alive.get(node_id, False)

    def _replace_idle_on(self, node_id: str | None) -> None:
        """Replace the idle actors on a node that died, before a job is sent to one of them."""
        if not node_id:
            return
        for slot in list(self._slots):
            if slot.job is None and slot.ready_ref is None and slot.stats.get("node_id") == node_id:
                self._replace(slot, kill=True)

    def waiting(self) -> str | None:
        """Why queued work is not running, when no actor has been able to start for a while
        (no node of the cluster has the CPUs/GPUs an actor needs); None while work runs.

        The replacements stay pending in Ray, which starts them as soon as a node with room
        joins: nothing is resubmitted in a loop meanwhile.
        """
        if not self._pending or any(s.job is not None or s.ready_ref is None for s in self._slots):
            self._starved_since = self._cluster_cpus = None
            return None
        now = time.monotonic()
        if self._starved_since is None:
            self._starved_since = now
        if now - self._starved_since < WAITING_AFTER_S:
            return None
        if self._cluster_cpus is None or now - self._cluster_cpus[0] > 5.0:
            try:
                free = float(ray.available_resources().get("CPU", 0.0))
                total = float(ray.cluster_resources().get("CPU", 0.0))
            except Exception:  # noqa: BLE001 - the GCS is unreachable: say what we know
                free = total = float("nan")
            self._cluster_cpus = (now, free, total)
        _, free, total = self._cluster_cpus
        need = f"{self.num_cpus:g} CPU" + (f" and {self.num_gpus:g} GPU" if self.num_gpus else "")
        return (
            f"waiting for Ray workers: {free:g} CPUs available (of {total:g} in the cluster); "
            f"{len(self._slots)} evaluator actor(s) pending, each needs {need}; "
            f"{len(self._pending)} evaluation(s) queued"
        )

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots):
            if slot.job is not None and now - slot.started > self.task_timeout_s:
                job = slot.job
                self._finish(
                    slot,
                    str(Delivery.TIMEOUT),
                    error=f"task exceeded its timeout of {self.task_timeout_s:g}s; "
                    f"actor {slot.actor_id} was killed and replaced",
                )
                self._ready[-1].attempts = job.attempts
                self._replace(slot, kill=True)

    def poll(self, timeout_s: float = 1.0) -> list[EvaluationResult]:
        """Wait up to ``timeout_s`` for results; return all that are ready (maybe none)."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while True:
            self._dispatch()
            running = {s.ref: s for s in self._slots if s.ref is not None}
            if running:
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for ref in ready:
                    self._collect(running[ref])
            self._check_timeouts()
            self._dispatch()
            now = time.monotonic()
            if self._ready or now >= deadline:
                break
            running = {s.ref: s for s in self._slots if s.ref is not None}
            if not running and not self._pending:
                break
            starting = (
                [s.ready_ref for s in self._slots if s.ready_ref is not None]
                if self._pending
                else []
            )
            next_timeout = min(
                (s.started + self.task_timeout_s for s in running.values()),
                default=deadline,
            )
            wait = max(0.0, min(deadline, next_timeout + 0.01) - now)
            ray.wait(list(running) + starting, num_returns=1, timeout=wait)
        out = list(self._ready)
        self._ready.clear()
        for r in out:
            self._job_ids.discard(r.job_id)
        return out

    def drain(self, timeout_s: float = 600.0) -> list[EvaluationResult]:
        """Poll until nothing is in flight (or ``timeout_s`` passes); return every result."""
        deadline = time.monotonic() + timeout_s
        results: list[EvaluationResult] = []
        while self.in_flight() and time.monotonic() < deadline:
            results += self.poll(min(5.0, max(0.0, deadline - time.monotonic())))
        return results

    # ------------------------------------------------------------------ stats
    def actor_stats(self, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
        """Per actor (live and retired): ``{"loads": {dataset: n}, "tasks", "alive", "pid", ...}``."""
        out = {k: dict(v) for k, v in self._retired.items()}
        refs = {s.actor_id: s.handle.stats.remote() for s in self._slots}
        for actor_id, ref in refs.items():
            slot = next(s for s in self._slots if s.actor_id == actor_id)
            try:
                st = ray.get(ref, timeout=timeout_s)
                slot.stats = dict(st)
                out[actor_id] = {**st, "alive": True}
            except Exception as exc:  # noqa: BLE001 - report what we know
                out[actor_id] = {
                    **slot.stats,
                    "actor_id": actor_id,
                    "alive": False,
                    "error": type(exc).__name__,
                }
        return out

    # ------------------------------------------------------------------ lifecycle
    def cancel_all(self) -> list[str]:
        """Abandon every job in flight; returns their ids.

        Queued jobs are dropped, results not yet polled are forgotten, and each actor that is
        running a job is killed and replaced by a fresh one (Ray cannot force-cancel an actor
        task), so nothing keeps computing for a cancelled campaign and the pool stays usable.
        """
        cancelled = [job.job_id for job in self._pending]
        self._pending.clear()
        for slot in list(self._slots):
            if slot.job is not None:
                cancelled.append(slot.job.job_id)
                slot.job, slot.ref = None, None
                self._replace(slot, kill=True)
        cancelled += [result.job_id for result in self._ready]
        self._ready.clear()
        self._job_ids.clear()
        return cancelled

    def shutdown(self) -> None:
        """Kill every actor; queued jobs are dropped."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already dead
                log.debug("killing %s: %s", slot.actor_id, exc)
        self._pending.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
