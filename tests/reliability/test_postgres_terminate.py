"""PostgreSQL connections terminated under load: the service reconnects and the campaign
completes.

``layerforge serve`` runs a real campaign (local evaluator, tiny MLP on digits) on a fresh
PostgreSQL database. While it runs, a killer thread calls ``pg_terminate_backend`` on every
connection of that database every 0.2-0.8 s, two clients poll the API and one follows the
event stream (reconnecting with ``Last-Event-ID`` when it ends).

What must hold:

* the campaign completes, with its budget of candidates and each evaluation stored once
  (a dropped connection is a transient error: the controller retries, it does not mark the
  campaign failed);
* every API answer is a 2xx, or a clean ``503 {"error": {"code": "unavailable", ...}}``
  with ``Retry-After`` (never a 500, never a dropped connection);
* the event stream delivers every event exactly once across reconnects, in order.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import httpx
import psycopg
import pytest

from tests.reliability.helpers import API, TINY_REAL_SPEC, Server, campaign_invariants, submit

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(400)]

# 16 candidates, and the killer's fast rounds until the first controller retry: with the
# slow rhythm alone, a run under CI load could finish without a single controller retry
SPEC = dict(TINY_REAL_SPEC, name="pg-terminate", budget={"max_candidates": 16, "max_seconds": 3600})


@pytest.fixture
def pg_url(postgres_admin_url):
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = create_postgres_database(postgres_admin_url)
    yield url
    drop_postgres_database(postgres_admin_url, url)


def terminate_all(admin_dsn: str, database: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def test_terminated_connections_are_survived(pg_url, postgres_admin_url, tmp_path):
    database = pg_url.rsplit("/", 1)[1]
    admin_dsn = postgres_admin_url.replace("postgresql+psycopg://", "postgresql://")
    server = Server(pg_url, tmp_path)
    stop = threading.Event()
    codes: Counter = Counter()
    bad: list[str] = []
    terminated = [0, 0]  # connections, rounds
    sse = {"events": [], "connections": 0, "broken": 0, "ended": False}

    def killer():
        # Fast rounds (every 20-100 ms) until the controller has logged its first retry, so
        # that path is exercised on every run however the scheduler happens to interleave;
        # then the slower 0.2-0.8 s rhythm of a flaky network for the rest of the campaign.
        rng = random.Random(1)
        retried = False
        while not stop.is_set():
            terminated[0] += terminate_all(admin_dsn, database)
            terminated[1] += 1
            retried = retried or "database unavailable" in server.logs()
            stop.wait(rng.uniform(0.2, 0.8) if retried else rng.uniform(0.02, 0.1))

    def poller(campaign_id: int):
        paths = [
            f"{API}/campaigns/{campaign_id}",
            f"{API}/campaigns/{campaign_id}/candidates",
            f"{API}/campaigns/{campaign_id}/pareto",
            f"{API}/campaigns",
            "/healthz",
        ]
        with httpx.Client(base_url=server.base, timeout=30) as client:
            while not stop.is_set():
                for path in paths:
                    try:
                        response = client.get(path)
                    except httpx.TransportError as err:
                        bad.append(f"{path}: transport error {err!r}")
                        continue
                    codes[response.status_code] += 1
                    if response.status_code >= 300:
                        ok = (
                            response.status_code == 503
                            and response.json().get("error", {}).get("code") == "unavailable"
                            and "retry-after" in response.headers
                        )
                        if not ok:
                            bad.append(f"{path}: {response.status_code} {response.text[:300]}")
                time.sleep(0.05)

    def follower(campaign_id: int):
        last = 0
        while not stop.is_set() and not sse["ended"]:
            sse["connections"] += 1
            try:
                with httpx.stream(
                    "GET",
                    f"{server.base}{API}/campaigns/{campaign_id}/events",
                    headers={"Last-Event-ID": str(last)},
                    timeout=30,
                ) as response:
                    if response.status_code != 200:
                        codes[response.status_code] += 1
                        time.sleep(0.5)
                        continue
                    event_id = kind = None
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            if kind == "end":
                                sse["ended"] = True
                            elif event_id is not None:
                                sse["events"].append(event_id)
                                json.loads(line[6:])
                                last = event_id
                            event_id = kind = None
            except (httpx.TransportError, httpx.HTTPError):
                sse["broken"] += 1
                time.sleep(0.3)

    threads = []
    try:
        server.start()
        campaign_id = submit(server.base, SPEC)
        threads = [
            threading.Thread(target=killer, daemon=True),
            threading.Thread(target=poller, args=(campaign_id,), daemon=True),
            threading.Thread(target=poller, args=(campaign_id,), daemon=True),
            threading.Thread(target=follower, args=(campaign_id,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 300
        while True:
            try:
                status = httpx.get(
                    f"{server.base}{API}/campaigns/{campaign_id}", timeout=30
                ).json()["status"]
            except (httpx.TransportError, KeyError):
                status = "?"
            if status in ("completed", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, "the campaign did not finish in 300 s"
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert status == "completed", server.log_tail()
    finally:
        stop.set()
        server.stop()
    figures = campaign_invariants(pg_url, campaign_id, SPEC["budget"]["max_candidates"])
    assert terminated[0] >= 10, terminated
    assert not bad, bad[:10]
    assert sse["ended"], (sse, dict(codes))
    assert sse["events"] == sorted(set(sse["events"])), "an event came twice or out of order"
    retries = server.logs().count("database unavailable")
    assert retries >= 1, "no controller retry was exercised"
    print(
        f"\n[pg_terminate] controller retries={retries} rounds={terminated[1]} connections terminated={terminated[0]} "
        f"http={dict(codes)} sse connections={sse['connections']} broken={sse['broken']} "
        f"events={len(sse['events'])} {figures}"
    )


def test_event_stream_with_a_huge_cursor_on_postgres(pg_url, tmp_path):
    """Event ids are 32-bit on PostgreSQL: a cursor up to the documented 2**63-1 must give an
    empty stream, not 'integer out of range' (which made every stream a 503 on PostgreSQL)."""
    from fastapi.testclient import TestClient

    from tests.api.helpers import make_app, small_spec

    app = make_app(tmp_path, database_url=pg_url)
    app.state.sse_max_seconds = 0.3
    with TestClient(app) as client:
        campaign_id = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
        for params, headers in (
            ({}, {}),
            ({"after": 2**62}, {}),
            ({}, {"Last-Event-ID": str(2**63 - 1)}),
        ):
            response = client.get(
                f"{API}/campaigns/{campaign_id}/events", params=params, headers=headers
            )
            assert response.status_code == 200, response.text
        assert "event: created" in client.get(f"{API}/campaigns/{campaign_id}/events").text
