"""Migration 0005 (status ``stopped`` for candidates and evaluations) on SQLite and
PostgreSQL: before it the database refuses the status, after it stores it with every row
and key kept, and the downgrade turns stopped rows into rejected / completed ones."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from layerforge.search.queries import create_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import (
    ConflictError,
    current_revision,
    downgrade_database,
    get_engine,
    session_scope,
    upgrade_database,
)
from layerforge.storage import repository as repo
from tests.api.helpers import small_spec


def _rows(engine):
    with session_scope(engine, readonly=True) as s:
        candidates = s.execute(text("SELECT id, text, status FROM candidate ORDER BY id")).all()
        evaluations = s.execute(
            text("SELECT id, candidate_id, status FROM evaluation ORDER BY id")
        ).all()
    return [tuple(r) for r in candidates], [tuple(r) for r in evaluations]


def _one_running_candidate(engine, campaign_id: int) -> tuple[int, int]:
    with session_scope(engine) as s:
        (cid,) = repo.add_candidates(
            s,
            campaign_id=campaign_id,
            rows=[
                {
                    "graph": {"builtin": "relu"},
                    "text": "relu",
                    "fingerprint": "fp-relu",
                    "origin": "seed",
                    "parent_ids": (),
                    "num_nodes": 1,
                    "strategy_data": {},
                    "status": "running",
                }
            ],
        )
        (eid,) = repo.add_running_evaluations(
            s, campaign_id=campaign_id, candidate_ids=[cid], owner="t", lease_seconds=60
        )
    return cid, eid


def test_0005_admits_stopped_keeps_rows_and_downgrades(database_url):
    upgrade_database(database_url, "0004")
    engine = get_engine(database_url)
    campaign_id = create_campaign(database_url, validate_spec(small_spec(name="before-0005")))
    cid, eid = _one_running_candidate(engine, campaign_id)
    with pytest.raises(ConflictError, match="ck_candidate_status"):  # 0004's CHECK lacks it
        with session_scope(engine) as s:
            s.execute(text("UPDATE candidate SET status = 'stopped' WHERE id = :i"), {"i": cid})
    before = _rows(engine)

    upgrade_database(database_url, "0005")
    assert current_revision(database_url) == "0005"
    engine = get_engine(database_url)
    assert _rows(engine) == before
    with session_scope(engine) as s:
        repo.finish_evaluations(
            s, rows=[{"id": eid, "status": "stopped", "result": {"status": "rung", "rung": 20}}]
        )
        repo.set_candidate_statuses(s, statuses={cid: "stopped"})
    with session_scope(engine, readonly=True) as s:
        stored = repo.evaluation_results(
            s, campaign_id=campaign_id, kind="search", statuses=["stopped"]
        )
    assert stored == [(cid, "stopped", {"status": "rung", "rung": 20})]
    # ids are still never reused on SQLite (0003's AUTOINCREMENT survives the rebuild)
    cid2, _ = _one_running_candidate(engine, campaign_id)
    assert cid2 > cid

    downgrade_database(database_url, "0004")
    assert current_revision(database_url) == "0004"
    candidates, evaluations = _rows(get_engine(database_url))
    assert (cid, "relu", "rejected") in candidates
    assert (eid, cid, "completed") in evaluations
