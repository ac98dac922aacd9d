"""Concurrent POSTs of campaigns with one ``Idempotency-Key``, over real HTTP against a real
``layerforge serve``, on SQLite and PostgreSQL.

Eight threads wait on a barrier and POST at once with the same key: with four different
bodies exactly one request creates the campaign (202, no ``Idempotent-Replayed``), the one
other request with the winner's body gets the same campaign (202, replayed), the six with
another body get 409 ``idempotency_conflict`` naming the winner's id, and the database holds
that one campaign only. With eight identical bodies all eight get the one campaign.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Campaign
from tests.api.helpers import small_spec
from tests.reliability.helpers import API, Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENTS = 8
ROUNDS = 4


def _post_at_once(base: str, bodies: list[dict], key: str) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            http.get("/healthz")  # connect before the barrier, so the POSTs leave together
            barrier.wait()
            responses[index] = http.post(
                f"{API}/campaigns", json=bodies[index], headers={"Idempotency-Key": key}
            )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r is not None for r in responses), "a client got no answer"
    return [r for r in responses if r is not None]


def _stored(url: str) -> list[tuple[int, str, str | None]]:
    with session_scope(get_engine(url), readonly=True) as s:
        rows = s.execute(select(Campaign.id, Campaign.name, Campaign.idempotency_key)).all()
        assert s.scalar(select(func.count()).select_from(Campaign)) == len(rows)
        return [tuple(row) for row in rows]


def test_one_key_concurrent_bodies_one_campaign(database_url: str, tmp_path: Path):
    server = Server(database_url, tmp_path, env={"LAYERFORGE_EVALUATOR": "simulated"})
    server.start()
    figures: Counter[str] = Counter()
    try:
        expected: list[tuple[int, str, str | None]] = []
        for round_number in range(ROUNDS):
            key = f"race-{round_number}"
            bodies = [small_spec(name=f"body-{i % 4}") for i in range(CLIENTS)]
            responses = _post_at_once(server.base, bodies, key)

            created = [
                (i, r)
                for i, r in enumerate(responses)
                if r.status_code == 202 and "idempotent-replayed" not in r.headers
            ]
            assert len(created) == 1, [(r.status_code, r.text[:200]) for r in responses]
            winner_index, winner = created[0]
            campaign_id = winner.json()["id"]
            winner_name = bodies[winner_index]["name"]
            for i, response in enumerate(responses):
                if bodies[i]["name"] == winner_name:
                    assert response.status_code == 202, response.text
                    assert response.json()["id"] == campaign_id
                    assert response.json()["name"] == winner_name
                else:
                    assert response.status_code == 409, response.text
                    error = response.json()["error"]
                    assert error["code"] == "idempotency_conflict"
                    assert (
                        f"campaign {campaign_id} " in error["message"] and key in error["message"]
                    )
                figures[str(response.status_code)] += 1
            expected.append((campaign_id, winner_name, key))
            assert sorted(_stored(database_url)) == sorted(expected)

        key = "same-body"
        responses = _post_at_once(server.base, [small_spec(name="same")] * CLIENTS, key)
        assert [r.status_code for r in responses] == [202] * CLIENTS, [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        replayed = [r.headers.get("idempotent-replayed") for r in responses]
        assert replayed.count(None) == 1 and replayed.count("true") == CLIENTS - 1
        expected.append((responses[0].json()["id"], "same", key))
        assert sorted(_stored(database_url)) == sorted(expected)
        print(f"{ROUNDS} rounds of {CLIENTS} racing POSTs, 4 bodies: {dict(figures)}")
    finally:
        server.stop()
