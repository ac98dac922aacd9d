"""Runs campaigns inside a long-lived service: picks up queued, resumed and orphaned ones.

The API service owns one :class:`ControllerManager`. It looks for campaigns that are queued
or running but have no live owner (a new submission, a resume, or a campaign whose previous
service died), and runs each in a thread with its own evaluator, up to ``max_concurrent``
at a time. Stopping the manager stops the runners cleanly; they leave their campaigns
``running`` and unowned, so the next start resumes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from storage import get_engine, repository as repo, session_scope

from search.campaign import CampaignRunner, _timestamp, owner_is_dead
from search.evaluators import Evaluator

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
    ):
        self.url = database_url
        self.evaluator_factory = evaluator_factory
        self.max_concurrent = max_concurrent
        self.scan_s = scan_s
        self.stale_after_s = stale_after_s
        self.runner_options = dict(runner_options or {})
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.runners: dict[int, threading.Thread] = {}
        self.errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start scanning in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="layerforge-controller",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Scan now (after a submission or a resume) instead of at the next tick."""
        self.wake_event.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop runners and the scanner; campaigns stay resumable."""
        self.stop_event.set()
        self.wake_event.set()
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
            except Exception:  # noqa: BLE001 - the scanner must survive database hiccups
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
            candidates = repo.list_campaigns(s, status=["queued", "running"], limit=1000)
            runnable = [
                c.id for c in sorted(candidates, key=lambda c: c.id)
                if c.id not in self.runners and (
                    c.owner is None or owner_is_dead(c.owner) or c.heartbeat_at is None
                    or now - _timestamp(c.heartbeat_at) > self.stale_after_s)
            ]
        for campaign_id in runnable[:room]:
            thread = threading.Thread(target=self._run, args=(campaign_id,),
                                      name=f"campaign-{campaign_id}", daemon=True)
            with self._lock:
                self.runners[campaign_id] = thread
            thread.start()

    def _run(self, campaign_id: int) -> None:
        evaluator = None
        try:
            evaluator = self.evaluator_factory()
            runner = CampaignRunner(self.url, campaign_id, evaluator, stop=self.stop_event,
                                    stale_after_s=self.stale_after_s, **self.runner_options)
            status = runner.run()
            log.info("campaign %s left the controller as %s", campaign_id, status)
        except Exception as err:  # noqa: BLE001 - recorded on the campaign, never fatal
            log.exception("campaign %s failed", campaign_id)
            self.errors[campaign_id] = f"{type(err).__name__}: {err}"
            try:
                with session_scope(get_engine(self.url)) as s:
                    repo.set_campaign_status(s, campaign_id=campaign_id, status="failed",
                                             expected=["queued", "running"],
                                             error=self.errors[campaign_id])
            except Exception:  # noqa: BLE001
                log.exception("could not mark campaign %s failed", campaign_id)
        finally:
            if evaluator is not None:
                evaluator.shutdown()
            self.wake_event.set()
