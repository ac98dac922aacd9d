"""Migration 0003: status ``cancelled`` and never-reused ids, keeping every row and key.

Run on a SQLite file (where the tables are rebuilt) and on PostgreSQL (CHECKs only).
"""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, inspect, text

from layerforge.storage import (
    ConflictError,
    StorageError,
    current_revision,
    downgrade_database,
    get_engine,
    session_scope,
    upgrade_database,
)
from layerforge.storage import repository as repo
from layerforge.storage.models import Campaign

TABLES = (
    "campaign",
    "candidate",
    "evaluation",
    "objective_value",
    "rejection",
    "hypervolume_point",
    "event",
)
KEYS = {"objective_value": "candidate_id, name"}
# Position of campaign_id in each child table's rows.
CAMPAIGN_COLUMN = {
    "candidate": 1,
    "evaluation": 2,
    "objective_value": 2,
    "rejection": 2,
    "hypervolume_point": 1,
    "event": 1,
}


def new_campaign(session, name="c"):
    """A campaign and its ``created`` event, as ``repo.create_campaign`` stores them, but
    inserted with the columns given only: the ORM would also name columns that later
    revisions add (0004's ``idempotency_hash``), which a 0002 database does not have."""
    campaign_id = session.execute(
        insert(Campaign.__table__)
        .values(
            name=name,
            status="queued",
            spec={"space": {"kind": "activation"}},
            space_kind="activation",
            strategy="evolution",
            objectives=["acc:mlp/mnist1d"],
        )
        .returning(Campaign.__table__.c.id)
    ).scalar_one()
    repo.add_event(session, campaign_id=campaign_id, kind="created", payload={"status": "queued"})
    return SimpleNamespace(id=campaign_id)


def fill(engine) -> None:
    """Three campaigns with candidates (one a duplicate, one a child), evaluations in every
    old status, objective values, a rejection, hypervolume points and events; the middle
    campaign is deleted so the ids have a gap."""
    with session_scope(engine) as s:
        ids = [new_campaign(s, f"c{i}").id for i in range(3)]
        for campaign_id in ids:
            parent = repo.add_candidate(
                s,
                campaign_id=campaign_id,
                graph={"nodes": [1]},
                text="relu(x)",
                fingerprint=f"p{campaign_id}",
                origin="seed",
            )
            child = repo.add_candidate(
                s,
                campaign_id=campaign_id,
                graph={"nodes": [2]},
                text="tanh(x)",
                fingerprint=f"k{campaign_id}",
                origin="mutation",
                parent_ids=[parent.id],
                status="running",
            )
            repo.add_candidate(
                s,
                campaign_id=campaign_id,
                graph={"nodes": [1]},
                text="relu(x)",
                fingerprint=f"p{campaign_id}",
                origin="mutation",
                status="duplicate",
                duplicate_of=parent.id,
            )
            done = repo.add_evaluation(s, candidate_id=parent.id, seed=0)
            repo.finish_evaluation(s, evaluation_id=done.id, status="completed", result={"a": 1})
            failed = repo.add_evaluation(s, candidate_id=parent.id, seed=1)
            repo.finish_evaluation(s, evaluation_id=failed.id, status="failed", error="boom")
            repo.add_evaluation(s, candidate_id=child.id, seed=0)
            repo.set_objective_values(s, candidate_id=parent.id, values={"acc": 0.5, "n": 2.0})
            repo.record_rejection(
                s, candidate_id=child.id, stage="probe", reason="constant", cost_seconds=0.1
            )
            repo.add_hypervolume_point(s, campaign_id=campaign_id, evaluations=1, hypervolume=0.2)
            repo.add_event(s, campaign_id=campaign_id, kind="note", payload={"i": campaign_id})
    with session_scope(engine) as s:
        repo.delete_campaign(s, campaign_id=ids[1])


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every row of every table, in key order."""
    with engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.execute(
                    text(f"SELECT * FROM {table} ORDER BY {KEYS.get(table, 'id')}")
                )
            ]
            for table in TABLES
        }


def foreign_keys(engine) -> dict[str, list[tuple]]:
    """Every table's foreign keys as (columns, referred table, referred columns, ondelete)."""
    inspector = inspect(engine)
    return {
        table: sorted(
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                (fk.get("options") or {}).get("ondelete"),
            )
            for fk in inspector.get_foreign_keys(table)
        )
        for table in TABLES
    }


def indexes(engine) -> dict[str, list[tuple]]:
    inspector = inspect(engine)
    return {
        table: sorted(
            (ix["name"], tuple(ix["column_names"])) for ix in inspector.get_indexes(table)
        )
        for table in TABLES
    }


def set_status(engine, table: str, row_id: int, status: str) -> None:
    with session_scope(engine) as s:
        s.execute(text(f"UPDATE {table} SET status = :s WHERE id = :i"), {"s": status, "i": row_id})


def test_upgrade_from_0002_keeps_every_row_and_key_and_downgrade_works(database_url):
    upgrade_database(database_url, "0002")
    engine = get_engine(database_url)
    fill(engine)
    before = snapshot(engine)
    keys_before = foreign_keys(engine)
    indexes_before = indexes(engine)
    assert len(before["campaign"]) == 2 and len(before["candidate"]) == 6
    assert len(before["evaluation"]) == 6 and len(before["objective_value"]) == 4
    with pytest.raises(StorageError):
        set_status(engine, "evaluation", before["evaluation"][-1][0], "cancelled")

    upgrade_database(database_url, "0003")  # 0003 itself: 0004 adds a column to campaign

    assert current_revision(database_url) == "0003"
    assert snapshot(engine) == before
    assert foreign_keys(engine) == keys_before
    assert indexes(engine) == indexes_before
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            sql = dict(connection.exec_driver_sql("SELECT name, sql FROM sqlite_master").fetchall())
            sequence = dict(
                connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").fetchall()
            )
        for table in ("campaign", "candidate", "evaluation", "rejection", "event"):
            assert "AUTOINCREMENT" in sql[table]
            assert sequence[table] == max(row[0] for row in before[table])

    running_candidate = before["candidate"][1][0]
    queued_evaluation = next(r[0] for r in before["evaluation"] if r[5] == "queued")
    set_status(engine, "candidate", running_candidate, "cancelled")
    set_status(engine, "evaluation", queued_evaluation, "cancelled")
    with pytest.raises(StorageError):
        set_status(engine, "evaluation", queued_evaluation, "lost")

    # Cascades still work after the rebuild: deleting a campaign removes its children only.
    last_campaign = before["campaign"][-1][0]
    with session_scope(engine) as s:
        repo.delete_campaign(s, campaign_id=last_campaign)
    after_delete = snapshot(engine)
    for table, column in CAMPAIGN_COLUMN.items():
        kept = [r for r in before[table] if r[column] != last_campaign]
        assert len(after_delete[table]) == len(kept) > 0, table

    downgrade_database(database_url, "0002")
    assert current_revision(database_url) == "0002"
    rows = snapshot(engine)
    assert len(rows["candidate"]) == 3 and len(rows["evaluation"]) == 3
    statuses = {r[0]: r[9] for r in rows["candidate"]}
    assert statuses[running_candidate] == "failed"  # cancelled has no place in 0002
    assert foreign_keys(engine) == keys_before
    with pytest.raises(StorageError):
        set_status(engine, "candidate", running_candidate, "cancelled")
    upgrade_database(database_url, "0003")
    assert current_revision(database_url) == "0003"


def test_a_deleted_campaigns_id_is_never_handed_out_again(database_url):
    upgrade_database(database_url)
    engine = get_engine(database_url)
    with session_scope(engine) as s:
        ids = [new_campaign(s, f"c{i}").id for i in range(3)]
    assert ids == [1, 2, 3]
    with session_scope(engine) as s:
        repo.delete_campaign(s, campaign_id=3)
    with session_scope(engine) as s:
        assert new_campaign(s, "after").id == 4


def test_ids_deleted_after_the_migration_are_not_reused_on_an_upgraded_database(database_url):
    upgrade_database(database_url, "0002")
    engine = get_engine(database_url)
    with session_scope(engine) as s:
        for i in range(3):
            new_campaign(s, f"c{i}")
    upgrade_database(database_url)
    with session_scope(engine) as s:
        repo.delete_campaign(s, campaign_id=3)
    with session_scope(engine) as s:
        assert new_campaign(s, "after").id == 4
    with pytest.raises(ConflictError), session_scope(engine) as s:
        s.execute(
            text(
                "INSERT INTO campaign (id, name, status, spec, space_kind, strategy, seed, "
                "objectives, elapsed_seconds, created_at, updated_at, data_version) VALUES "
                "(4, 'x', 'queued', '{}', 'activation', 'random', 0, '[]', 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0)"
            )
        )


def test_sqlite_upgrade_refuses_a_database_with_broken_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    upgrade_database(url, "0002")
    engine = get_engine(url)
    with session_scope(engine) as s:
        campaign_id = new_campaign(s).id
    raw = sqlite3.connect(tmp_path / "orphan.db")
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute(
        "INSERT INTO event (campaign_id, kind, payload, created_at) "
        "VALUES (999, 'orphan', '{}', '2026-01-01')"
    )
    raw.commit()
    raw.close()
    before = snapshot(engine)

    with pytest.raises(RuntimeError, match="foreign keys"):
        upgrade_database(url)

    assert current_revision(url) == "0002"  # the whole migration rolled back
    assert snapshot(engine) == before
    assert before["campaign"][0][0] == campaign_id
