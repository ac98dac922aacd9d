"""Runs campaigns inside a long-lived service: picks up queued, resumed and orphaned ones.

The API service owns one :class:`ControllerManager`. It looks for campaigns that are queued
or running but have no live owner (a new submission, a resume, or a campaign whose previous
service died), and runs each in a thread with its own evaluator, up to ``max_concurrent``
at a time. Stopping the manager stops the runners cleanly; they leave their campaigns
``running`` and unowned, so the next start resumes them.

A campaign ends without loose ends: :meth:`ControllerManager.cancel` interrupts its runner
at once (the runner's own watcher notices a cancel made elsewhere), a runner that fails
closes its in-flight work as ``failed``, :meth:`ControllerManager.stop_campaign` stops one
runner before its campaign is deleted, and :meth:`ControllerManager.start` first closes the
in-flight work older versions left in finished campaigns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import Evaluator
from layerforge.search.ownership import new_owner, owner_is_dead, timestamp
from layerforge.storage import (
    CAMPAIGN_FINISHED,
    CampaignStatus,
    ConflictError,
    EvaluationStatus,
    NotFoundError,
    get_engine,
    is_transient,
    session_scope,
)
from layerforge.storage import repository as repo

log = logging.getLogger(__name__)


class ControllerManager:
    """Background thread that keeps runnable campaigns running."""

    def __init__(
        self,
        database_url: str,
        evaluator_factory: Callable[[], Evaluator],
        *,
        max_concurrent: int = 2,
        scan_s: float = 1.0,
        stale_after_s: float = 30.0,
        runner_options: dict | None = None,
        max_backoff_s: float = 10.0,
    ):
        self.url = database_url
        self.evaluator_factory = evaluator_factory
        self.max_concurrent = max_concurrent
        self.scan_s = scan_s
        self.stale_after_s = stale_after_s
        self.runner_options = dict(runner_options or {})
        self.max_backoff_s = max_backoff_s
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.runners: dict[int, threading.Thread] = {}
        # the CampaignRunner each runner thread is running now (a retry makes a new one)
        self.campaign_runners: dict[int, CampaignRunner] = {}
        # campaigns whose runner was told to stop for good (their campaign is being deleted)
        self._stopping: set[int] = set()
        self.errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Close what older versions left in flight in finished campaigns, then start
        scanning in a daemon thread."""
        self.repair()
        self._thread = threading.Thread(
            target=self._loop, name="layerforge-controller", daemon=True
        )
        self._thread.start()

    def repair(self) -> dict[int, repo.Closed]:
        """Close the queued/running evaluations and proposed/running candidates of campaigns
        that already finished (see :func:`storage.repository.repair_finished_campaigns`);
        returns what was closed per campaign. A failure is logged, never fatal: the service
        still starts, and the next start tries again."""
        try:
            with session_scope(get_engine(self.url)) as s:
                repaired = repo.repair_finished_campaigns(s)
        except Exception:
            log.exception("could not repair finished campaigns' in-flight work")
            return {}
        for campaign_id, closed in repaired.items():
            log.warning(
                "campaign %s had finished with work in flight: closed %s evaluation(s) and "
                "%s candidate(s)",
                campaign_id,
                closed.evaluations,
                closed.candidates,
            )
        return repaired

    def cancel(self, campaign_id: int) -> bool:
        """Interrupt the runner of a campaign just cancelled in storage: its jobs stop now
        and it closes the in-flight work. Returns False when this manager does not run it
        (another process's runner notices the cancel through its watcher)."""
        with self._lock:
            runner = self.campaign_runners.get(campaign_id)
        if runner is None:
            return False
        runner.halt("cancelled")
        return True

    def stop_campaign(self, campaign_id: int, timeout_s: float = 10.0) -> bool:
        """Stop the campaign's runner for good and wait up to ``timeout_s`` for its thread
        to end; True when no runner of it is left in this manager.

        Used before the campaign is deleted, so that a runner can never write after its
        row is gone. The scanner does not start the campaign again meanwhile.
        """
        with self._lock:
            self._stopping.add(campaign_id)
            thread = self.runners.get(campaign_id)
            runner = self.campaign_runners.get(campaign_id)
        if runner is not None:
            runner.halt("deleted")
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            stopped = thread is None or not thread.is_alive()
            if stopped:
                self.runners.pop(campaign_id, None)
            return stopped

    def forget(self, campaign_id: int) -> None:
        """Drop a deleted campaign from the manager's book-keeping."""
        with self._lock:
            self._stopping.discard(campaign_id)
            self.errors.pop(campaign_id, None)

    def wake(self) -> None:
        """Scan now (after a submission or a resume) instead of at the next tick."""
        self.wake_event.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop runners and the scanner; campaigns stay resumable."""
        self.stop_event.set()
        self.wake_event.set()
        with self._lock:
            running = list(self.campaign_runners.values())
        for runner in running:
            runner.halt("stopped")  # an ask in progress returns now
        deadline = time.monotonic() + timeout_s
        for thread in list(self.runners.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def active(self) -> list[int]:
        """Ids of the campaigns this manager is running now."""
        with self._lock:
            return [cid for cid, t in self.runners.items() if t.is_alive()]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._scan()
            except Exception:
                log.exception("controller scan failed; retrying")
            self.wake_event.wait(self.scan_s)
            self.wake_event.clear()

    def _scan(self) -> None:
        with self._lock:
            self.runners = {cid: t for cid, t in self.runners.items() if t.is_alive()}
            room = self.max_concurrent - len(self.runners)
        if room <= 0:
            return
        now = time.time()
        with session_scope(get_engine(self.url), readonly=True) as s:
            candidates = repo.list_campaigns(
                s, status=[CampaignStatus.QUEUED, CampaignStatus.RUNNING], limit=1000
            )
            runnable = [
                c.id
                for c in sorted(candidates, key=lambda c: c.id)
                if c.id not in self.runners
                and c.id not in self._stopping
                and (
                    c.owner is None
                    or owner_is_dead(c.owner)
                    or c.heartbeat_at is None
                    or now - timestamp(c.heartbeat_at) > self.stale_after_s
                )
            ]
        for campaign_id in runnable[:room]:
            thread = threading.Thread(
                target=self._run, args=(campaign_id,), name=f"campaign-{campaign_id}", daemon=True
            )
            with self._lock:  # started under the lock: stop_campaign may join it at once
                self.runners[campaign_id] = thread
                thread.start()

    def _run(self, campaign_id: int) -> None:
        """Run one campaign; a lost database connection is retried, not a failure.

        A transient storage error (the server terminated the connection, restarted, SQLite
        was locked) ends the runner; after a back-off a new runner with the same owner takes
        the campaign up again from storage (``_claim`` re-queues what was in flight, and the
        evaluations' uniqueness keeps each stored once). Only other errors mark the campaign
        failed, and never one that another controller has taken over meanwhile.
        """
        owner = new_owner()
        failures = 0
        while True:
            evaluator = None
            started = time.monotonic()
            try:
                evaluator = self.evaluator_factory()
                runner = CampaignRunner(
                    self.url,
                    campaign_id,
                    evaluator,
                    stop=self.stop_event,
                    stale_after_s=self.stale_after_s,
                    owner=owner,
                    **self.runner_options,
                )
                with self._lock:
                    if campaign_id in self._stopping:
                        return
                    self.campaign_runners[campaign_id] = runner
                status = runner.run()
                log.info("campaign %s left the controller as %s", campaign_id, status)
                return
            except Exception as err:
                if campaign_id in self._stopping:
                    log.info("campaign %s is being deleted; its runner left (%s)", campaign_id, err)
                    return
                if is_transient(err) and not self.stop_event.is_set():
                    failures = 1 if time.monotonic() - started > 60 else failures + 1
                    delay = min(self.max_backoff_s, 0.25 * 2**failures)
                    log.warning(
                        "campaign %s: database unavailable (%s); retrying in %.1f s",
                        campaign_id,
                        err,
                        delay,
                    )
                    self.stop_event.wait(delay)
                    continue
                if self.stop_event.is_set() and is_transient(err):
                    return  # shutting down: the next start resumes the campaign
                if not self._exists(campaign_id):
                    log.info("campaign %s was deleted; its runner left (%s)", campaign_id, err)
                    return
                if isinstance(err, ConflictError) and self._owned_by_another(campaign_id, owner):
                    log.info("campaign %s is run by another controller: %s", campaign_id, err)
                    return
                log.exception("campaign %s failed", campaign_id)
                self.errors[campaign_id] = f"{type(err).__name__}: {err}"
                self._fail(campaign_id, self.errors[campaign_id])
                return
            finally:
                with self._lock:
                    self.campaign_runners.pop(campaign_id, None)
                if evaluator is not None:
                    evaluator.shutdown()
                self.wake_event.set()

    def _fail(self, campaign_id: int, error: str) -> None:
        """Mark a campaign whose runner failed ``failed`` and close its in-flight work in
        the same transaction (``failed``, with the error; ``cancelled`` when the campaign
        was cancelled meanwhile)."""
        try:
            with session_scope(get_engine(self.url)) as s:
                try:
                    campaign = repo.set_campaign_status(
                        s,
                        campaign_id=campaign_id,
                        status=CampaignStatus.FAILED,
                        expected=[CampaignStatus.QUEUED, CampaignStatus.RUNNING],
                        error=error,
                    )
                except ConflictError:
                    campaign = repo.get_campaign(s, campaign_id=campaign_id)
                if campaign.status in CAMPAIGN_FINISHED:
                    closing = (
                        EvaluationStatus.CANCELLED
                        if campaign.status == CampaignStatus.CANCELLED
                        else EvaluationStatus.FAILED
                    )
                    closed = repo.close_in_flight(
                        s, campaign_id=campaign_id, status=closing, reason=error
                    )
                    repo.add_event(
                        s,
                        campaign_id=campaign_id,
                        kind="closed",
                        payload={"status": closing, "reason": error, **closed._asdict()},
                    )
        except Exception:
            log.exception("could not mark campaign %s failed", campaign_id)

    def _exists(self, campaign_id: int) -> bool:
        """Whether the campaign is still stored (True when that cannot be read)."""
        try:
            with session_scope(get_engine(self.url), readonly=True) as s:
                repo.get_campaign(s, campaign_id=campaign_id)
                return True
        except NotFoundError:
            return False
        except Exception:  # noqa: BLE001 - cannot tell: assume it is there
            return True

    def _owned_by_another(self, campaign_id: int, owner: str) -> bool:
        """True when a live controller other than ``owner`` holds the campaign."""
        try:
            with session_scope(get_engine(self.url), readonly=True) as s:
                campaign = repo.get_campaign(s, campaign_id=campaign_id)
                return campaign.owner not in (None, owner) and not owner_is_dead(campaign.owner)
        except Exception:  # noqa: BLE001 - cannot tell: treat as not taken over
            return False
