"""The SQLite database file deleted or replaced under a running ``layerforge serve``.

A campaign is running (the local evaluator: real training, writes every few hundred ms).
The file is then deleted (``os.remove``) or replaced by another layerforge database
(``os.replace``). The service must notice: ``/healthz`` turns 503 naming the reason, a POST
of a campaign is a 503 with code ``database_file_changed``, the log says why once, the
campaign runner stops writing (the ``-wal`` file, which stays at the path and takes every
write of the deleted file, is not touched again), a deleted path is not re-created as an
empty database, and a replacement database gets nothing of the running service's.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest

from layerforge.storage import dispose_engines, session_scope, upgrade_database
from layerforge.storage import get_engine as storage_engine
from layerforge.storage import repository as repo
from layerforge.storage.engine import DATABASE_FILE_CHANGED_LOG
from tests.api.helpers import small_spec
from tests.reliability.helpers import API, TINY_REAL_SPEC, Server, submit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEC = dict(TINY_REAL_SPEC, name="watched", budget={"max_candidates": 200, "max_seconds": 3600})
DETECT_WITHIN_S = 5.0


def _wait_running_with_candidates(base: str, campaign_id: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        body = httpx.get(f"{base}{API}/campaigns/{campaign_id}", timeout=10).json()
        if body["status"] == "running" and body["progress"]["candidates"] >= 2:
            return
        assert body["status"] in ("queued", "running"), body
        assert time.monotonic() < deadline, f"campaign still {body['status']}"
        time.sleep(0.2)


def _seconds_until_healthz_fails(base: str) -> tuple[float, httpx.Response]:
    t0 = time.monotonic()
    while True:
        response = httpx.get(f"{base}/healthz", timeout=10)
        elapsed = time.monotonic() - t0
        if response.status_code != 200 or elapsed > DETECT_WITHIN_S:
            return elapsed, response
        time.sleep(0.05)


def _assert_refuses_writes(server: Server, db: Path, reason_text: str) -> None:
    """healthz 503, a POST 503 with the code, the log naming the path once."""
    elapsed, health = _seconds_until_healthz_fails(server.base)
    print(f"healthz failed {elapsed:.3f} s after the file changed")
    assert health.status_code == 503, health.text
    database = health.json()["database"]
    assert database["ok"] is False
    assert database["code"] == "database_file_changed"
    assert database["path"] == str(db)
    assert reason_text in database["error"]
    assert elapsed < DETECT_WITHIN_S

    for _ in range(3):
        response = httpx.post(f"{server.base}{API}/campaigns", json=small_spec(), timeout=30)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "database_file_changed"
        assert str(db) in error["message"] and reason_text in error["message"]
    assert httpx.get(f"{server.base}/healthz", timeout=10).status_code == 503

    log = server.log_tail(chars=10_000_000)
    told = [line for line in log.splitlines() if line.startswith(DATABASE_FILE_CHANGED_LOG)]
    assert len(told) == 1, told
    assert str(db) in told[0] and reason_text in told[0]


def _wal_untouched(server: Server, wal: Path, seconds: float = 4.0) -> None:
    """The runner keeps running (its evaluations finish) but writes nothing any more."""
    time.sleep(1.5)  # a write that passed the last once-a-second check may still land
    before = wal.stat().st_mtime_ns, wal.stat().st_size
    time.sleep(seconds)
    assert (wal.stat().st_mtime_ns, wal.stat().st_size) == before
    assert server.proc is not None and server.proc.poll() is None, server.log_tail()
    # the runner waits with back-off; it is neither failed nor restarted in a loop (before
    # it was treated as transient, ~90 restarts a second, each with two tracebacks)
    log = server.log_tail(chars=10_000_000)
    assert "failed" not in " ".join(line for line in log.splitlines() if "campaign" in line)
    assert log.count("database unavailable") <= 10, log[-3000:]


def test_deleted_database_file_is_detected_and_writes_stop(tmp_path: Path):
    db = tmp_path / "service.db"
    server = Server(f"sqlite:///{db}", tmp_path)
    server.start()
    try:
        campaign_id = submit(server.base, SPEC)
        _wait_running_with_candidates(server.base, campaign_id)
        wal = Path(f"{db}-wal")
        assert wal.exists()

        os.remove(db)
        _assert_refuses_writes(server, db, "was deleted")
        _wal_untouched(server, wal)
        assert not db.exists(), "the deleted path was re-created as an empty database"
    finally:
        server.stop()


def test_replaced_database_file_is_detected_and_the_replacement_untouched(tmp_path: Path):
    db = tmp_path / "service.db"
    other = tmp_path / "other.db"
    other_url = f"sqlite:///{other}"
    upgrade_database(other_url)
    with session_scope(storage_engine(other_url)) as s:
        repo.create_campaign(
            s,
            name="someone-else",
            spec={},
            space_kind="activation",
            strategy="random",
            objectives=[],
            status="completed",
        )
    dispose_engines()  # close the test's connections: the file is moved below
    assert not Path(f"{other}-wal").exists()
    replacement_sha256 = hashlib.sha256(other.read_bytes()).hexdigest()

    server = Server(f"sqlite:///{db}", tmp_path)
    server.start()
    try:
        campaign_id = submit(server.base, SPEC)
        _wait_running_with_candidates(server.base, campaign_id)
        wal = Path(f"{db}-wal")

        os.replace(other, db)
        _assert_refuses_writes(server, db, "was replaced by another file")
        _wal_untouched(server, wal)
    finally:
        server.stop()

    # not one byte of the replacement was written by the service (its stale -wal, left
    # beside the path, is the operator's to remove: see docs/RELIABILITY.md)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == replacement_sha256
    print("stale -wal beside the replacement after the stop:", Path(f"{db}-wal").exists())
