"""A deleted campaign's runner stops before the row goes, so it can never write into
another campaign; over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from layerforge.api.routes import campaigns as campaign_routes
from layerforge.search.evaluators import SimulatedEvaluator
from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import (
    Campaign,
    Candidate,
    Evaluation,
    Event,
    HypervolumePoint,
    ObjectiveValue,
    Rejection,
)
from tests.reliability.helpers import API, TINY_REAL_SPEC, submit
from tests.reliability.test_cancel_latency import (
    LONG_STEPS_SPEC,
    in_flight,
    service,
    wait_for,
    warm_up_training,
)

CHILD_TABLES = (Candidate, Evaluation, ObjectiveValue, Rejection, HypervolumePoint, Event)


def rows_of(url: str, campaign_id: int) -> dict[str, int]:
    """Rows per table that belong to the campaign (its own row included)."""
    with session_scope(get_engine(url), readonly=True) as s:
        counts = {
            model.__tablename__: int(
                s.scalar(
                    select(func.count()).select_from(model).where(model.campaign_id == campaign_id)  # type: ignore[attr-defined] - every model in the loop has campaign_id; the base class does not
                )
                or 0
            )
            for model in CHILD_TABLES
        }
        counts["campaign"] = int(
            s.scalar(select(func.count()).select_from(Campaign).where(Campaign.id == campaign_id))
            or 0
        )
    return counts


@pytest.mark.slow
def test_delete_right_after_cancel_stops_the_runner_before_the_row_goes(database_url):
    warm_up_training()
    with service(database_url, evaluator="local", device="cpu") as (base, app):
        campaign_id = submit(base, LONG_STEPS_SPEC)
        wait_for(
            lambda: in_flight(database_url, campaign_id).get("evaluation running", 0) > 0,
            60,
            "training to start",
        )
        time.sleep(2.0)
        assert campaign_id in app.state.manager.active()

        cancel = httpx.post(f"{base}{API}/campaigns/{campaign_id}/cancel", timeout=10)
        delete = httpx.delete(f"{base}{API}/campaigns/{campaign_id}", timeout=30)

        assert cancel.status_code == 200 and delete.status_code == 204, delete.text
        assert campaign_id not in app.state.manager.active()  # gone before the 204
        assert campaign_id not in app.state.manager.campaign_runners
        assert sum(rows_of(database_url, campaign_id).values()) == 0

        spec = {**TINY_REAL_SPEC, "budget": {"max_candidates": 3, "max_seconds": 3600}}
        successor = submit(base, spec)
        assert successor == campaign_id + 1  # the deleted id is not handed out again
        body = wait_for_finish(base, successor)
        assert body["status"] == "completed", body
        assert sum(rows_of(database_url, campaign_id).values()) == 0  # nothing written late
        with session_scope(get_engine(database_url), readonly=True) as s:
            assert s.scalar(select(func.count()).where(Candidate.campaign_id == successor)) == (3)


def wait_for_finish(base: str, campaign_id: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{base}{API}/campaigns/{campaign_id}", timeout=10).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"campaign {campaign_id} still {body['status']}"
        time.sleep(0.2)


class DeafEvaluator(SimulatedEvaluator):
    """An evaluator whose poll blocks for ``block_s`` and ignores a cancel while it does (a
    stuck driver call), so its runner cannot stop in time."""

    block_s = 4.0

    def poll(self, timeout_s):
        if self.pending:
            time.sleep(self.block_s)
        return []


def test_a_runner_that_does_not_stop_in_time_makes_the_delete_409_and_keeps_the_campaign(
    database_url, monkeypatch
):
    monkeypatch.setattr(campaign_routes, "DELETE_RUNNER_STOP_S", 1.0)
    with service(database_url, evaluator="simulated") as (base, app):
        app.state.manager.evaluator_factory = lambda: DeafEvaluator(seconds=3600)
        campaign_id = submit(base, TINY_REAL_SPEC)
        wait_for(
            lambda: in_flight(database_url, campaign_id).get("evaluation running", 0) > 0,
            30,
            "dispatch",
        )
        assert httpx.post(f"{base}{API}/campaigns/{campaign_id}/cancel").status_code == 200

        refused = httpx.delete(f"{base}{API}/campaigns/{campaign_id}", timeout=30)

        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "runner_busy" and "did not stop within 1 s" in error["message"]
        kept = rows_of(database_url, campaign_id)
        assert kept["campaign"] == 1 and kept["candidate"] > 0  # nothing was deleted
        wait_for(lambda: campaign_id not in app.state.manager.active(), 30, "the runner to leave")
        assert httpx.delete(f"{base}{API}/campaigns/{campaign_id}").status_code == 204
        assert sum(rows_of(database_url, campaign_id).values()) == 0
