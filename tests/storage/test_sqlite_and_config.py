"""SQLite specifics (concurrent writers from two processes) and database URL validation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from layerforge.storage import (
    StorageError,
    get_engine,
    session_scope,
    upgrade_database,
    validate_database_url,
)
from layerforge.storage import (
    repository as repo,
)

WRITER = textwrap.dedent(
    """
    import sys
    from layerforge.storage import get_engine, session_scope, repository as repo
    url, campaign_id, tag, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    engine = get_engine(url)
    for i in range(n):
        with session_scope(engine) as s:
            c = repo.add_candidate(s, campaign_id=campaign_id, graph={}, text="x",
                                   fingerprint=f"{tag}{i}", origin="random")
            repo.set_objective_values(s, candidate_id=c.id, values={"acc": i / n})
            repo.add_event(s, campaign_id=campaign_id, kind="candidate", payload={"i": i})
        with session_scope(engine, readonly=True) as s:
            repo.count_candidates(s, campaign_id=campaign_id)
    print("done", tag)
    """
)


def test_two_processes_write_one_sqlite_file_without_locking_errors(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade_database(url)
    with session_scope(get_engine(url)) as s:
        campaign_id = repo.create_campaign(
            s, name="c", spec={}, space_kind="activation", strategy="random", objectives=["acc"]
        ).id
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(campaign_id), tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    with session_scope(get_engine(url), readonly=True) as s:
        assert repo.count_candidates(s, campaign_id=campaign_id)["proposed"] == 2 * n
        seqs = s.execute(text("SELECT seq FROM candidate ORDER BY seq")).scalars().all()
        assert seqs == list(range(2 * n))  # no sequence number handed out twice
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_sqlite_enforces_foreign_keys(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    upgrade_database(url)
    with pytest.raises(StorageError), session_scope(get_engine(url)) as s:
        s.execute(
            text(
                "INSERT INTO event (campaign_id, kind, payload, created_at) "
                "VALUES (12345, 'x', '{}', '2026-01-01')"
            )
        )


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("not a url", "not a valid database URL"),
        ("mysql://root@localhost/test", "backend 'mysql'"),
        ("postgresql+asyncpg://u@h/db", "driver 'asyncpg'"),
        ("postgresql+psycopg://u@h", "names no database"),
        ("sqlite:////no/such/folder/x.db", "does not exist"),
    ],
)
def test_bad_database_urls_name_the_variable(url: str, fragment: str):
    with pytest.raises(StorageError) as info:
        validate_database_url(url)
    assert "LAYERFORGE_DATABASE_URL" in str(info.value)
    assert fragment in str(info.value)
    assert not Path("/no/such/folder").exists()
