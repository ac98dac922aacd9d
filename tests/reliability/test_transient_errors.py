"""Fast checks of the fixes behind test_postgres_terminate.py, without PostgreSQL:

* ``storage.is_transient`` tells a lost connection from a real error;
* the ControllerManager retries a runner that lost its database connection instead of
  marking the campaign failed, and still marks it failed on a real error;
* a campaign that another live controller took over is not marked failed by the loser.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import exc

import layerforge.search.manager as manager_module
from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import SimulatedEvaluator
from layerforge.search.manager import ControllerManager
from layerforge.search.queries import create_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import (
    ConflictError,
    NotFoundError,
    StorageError,
    get_engine,
    is_transient,
    session_scope,
    upgrade_database,
)
from layerforge.storage import (
    repository as repo,
)
from tests.reliability.bad_specs import valid_spec


def wrapped(cause: BaseException, kind=StorageError) -> StorageError:
    try:
        raise kind(f"database error: {cause}") from cause
    except StorageError as err:
        return err


def test_is_transient_knows_a_lost_connection_from_a_real_error():
    lost = exc.OperationalError("SELECT 1", {}, Exception("terminating connection"))
    assert is_transient(wrapped(lost))
    assert is_transient(wrapped(sqlite3.OperationalError("database is locked")))
    invalidated = exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(wrapped(invalidated))
    assert not is_transient(
        wrapped(exc.IntegrityError("INSERT", {}, Exception("unique")), ConflictError)
    )
    assert not is_transient(wrapped(exc.DataError("INSERT", {}, Exception("out of range"))))
    assert not is_transient(NotFoundError("campaign 9 does not exist"))
    assert not is_transient(ValueError("a bug"))


@pytest.fixture
def campaign(tmp_path):
    url = f"sqlite:///{tmp_path / 'manager.db'}"
    upgrade_database(url)
    spec = dict(valid_spec(), budget={"max_candidates": 10})
    return url, create_campaign(url, validate_spec(spec))


def run_manager(url: str, timeout: float = 60.0) -> ControllerManager:
    manager = ControllerManager(url, SimulatedEvaluator, scan_s=0.1, max_backoff_s=0.2)
    manager.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            with session_scope(get_engine(url), readonly=True) as s:
                if all(
                    c.status in ("completed", "failed", "cancelled") for c in repo.list_campaigns(s)
                ):
                    return manager
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        manager.stop()


def status_of(url: str, campaign_id: int) -> tuple[str, str | None]:
    with session_scope(get_engine(url), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        return campaign.status, campaign.error


def test_a_lost_connection_is_retried_not_a_failed_campaign(campaign, monkeypatch):
    url, campaign_id = campaign
    calls = []

    class FlakyRunner(CampaignRunner):
        def _store(self, outcomes):
            calls.append(len(outcomes))
            if len(calls) in (2, 3):  # the connection drops twice, mid-campaign
                raise wrapped(exc.OperationalError("UPDATE", {}, Exception("terminated")))
            return super()._store(outcomes)

    monkeypatch.setattr(manager_module, "CampaignRunner", FlakyRunner)
    manager = run_manager(url)
    status, error = status_of(url, campaign_id)
    assert (status, error) == ("completed", None), manager.errors
    assert not manager.errors and len(calls) > 3
    from tests.reliability.helpers import campaign_invariants

    campaign_invariants(url, campaign_id, 10)


def test_a_real_error_still_fails_the_campaign(campaign, monkeypatch):
    url, campaign_id = campaign

    class BrokenRunner(CampaignRunner):
        def _store(self, outcomes):
            raise wrapped(exc.DataError("INSERT", {}, Exception("value out of range")))

    monkeypatch.setattr(manager_module, "CampaignRunner", BrokenRunner)
    manager = run_manager(url)
    status, error = status_of(url, campaign_id)
    assert status == "failed" and "out of range" in error
    assert campaign_id in manager.errors


def test_losing_a_takeover_does_not_fail_the_winners_campaign(campaign, monkeypatch):
    url, campaign_id = campaign
    import os
    import socket

    winner = f"{socket.gethostname()}:{os.getpid()}:winner"
    raised = []

    class LosingRunner(CampaignRunner):
        def _store(self, outcomes):
            # another live controller took the campaign over (its heartbeat is fresh)
            raised.append(self.owner)
            with session_scope(self.engine) as s:
                repo.touch_campaign(s, campaign_id=self.campaign_id, owner=winner)
            raise ConflictError(f"campaign {self.campaign_id} was taken over by {winner}")

        def _release(self):
            pass

    monkeypatch.setattr(manager_module, "CampaignRunner", LosingRunner)
    manager = ControllerManager(url, SimulatedEvaluator, scan_s=0.1, max_backoff_s=0.2)
    manager.start()
    try:
        deadline = time.monotonic() + 30
        while not raised or manager.active():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        manager.stop()
    status, error = status_of(url, campaign_id)
    assert status == "running" and error is None, (status, error)
    assert len(raised) == 1 and not manager.errors
