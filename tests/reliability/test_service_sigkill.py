"""The service SIGKILLed at random moments, >= 5 times in one campaign, on SQLite and
PostgreSQL.

``layerforge serve`` runs the controller in-process (``LAYERFORGE_EVALUATOR=local``: real
training of a tiny MLP on digits). A campaign is submitted over HTTP; the server is then
SIGKILLed at a random moment (after 0-1 more evaluations finished since it
started, then 0-1.2 s later) (mid-evaluation,
mid-commit, mid-claim: wherever it happens to be), and restarted on the same database and
port. The restarted controller takes the campaign over because its owner is a dead process
on this host (``search.ownership.owner_is_dead``), re-queues what was in flight and goes on.

After the fifth kill the server runs to the end. The campaign must then have exactly its
budget of candidates, every non-duplicate candidate exactly one search evaluation, none
unfinished (see ``helpers.campaign_invariants``).

(``tests/search/test_real_campaign.py`` does the same to ``layerforge run`` on SQLite; this
one kills the long-lived service, the way it is deployed, on both databases.)
"""

from __future__ import annotations

import random
import time

import httpx
import pytest

from tests.reliability.helpers import (
    API,
    TINY_REAL_SPEC,
    Server,
    campaign_invariants,
    submit,
    wait_status,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

KILLS = 5
SPEC = dict(
    TINY_REAL_SPEC,
    name="sigkill",
    budget={"max_candidates": 20, "max_seconds": 3600},
    proxies=[{"arch": "mlp", "dataset": "digits", "steps": 20, "batch_size": 64}],
)


def finished(base: str, campaign_id: int) -> int:
    counts = httpx.get(f"{base}{API}/campaigns/{campaign_id}", timeout=10).json()["counts"]
    return sum(n for status, n in counts.items() if status not in ("proposed", "running"))


def test_service_sigkilled_five_times_resumes_and_loses_nothing(database_url, tmp_path):
    rng = random.Random(8)
    server = Server(database_url, tmp_path)
    progress_at_kill = []
    try:
        server.start()
        t0 = time.monotonic()
        campaign_id = submit(server.base, SPEC, **{"Idempotency-Key": "sigkill-1"})
        while server.kills < KILLS:
            # a random moment: after 0-1 more evaluations have finished since this start,
            # then 0-1.2 s later (so kills land in the claim, mid-training and mid-commit)
            target = finished(server.base, campaign_id) + rng.choice([0, 0, 1])
            deadline = time.monotonic() + 60
            while finished(server.base, campaign_id) < target and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 1.2))
            body = httpx.get(f"{server.base}{API}/campaigns/{campaign_id}", timeout=10).json()
            assert body["status"] not in ("completed", "failed", "cancelled"), (
                f"the campaign ended ({body['status']}) after only {server.kills} kills; "
                "make it bigger",
                body.get("error"),
            )
            progress_at_kill.append(
                (finished(server.base, campaign_id), round(time.monotonic() - t0, 1))
            )
            server.sigkill()
            server.start()
        body = wait_status(server.base, campaign_id, timeout=300)
        assert body["status"] == "completed", (body.get("error"), server.log_tail())
    finally:
        server.stop()
    figures = campaign_invariants(database_url, campaign_id, SPEC["budget"]["max_candidates"])
    assert server.kills == KILLS
    # kills landed while work was in flight: the restarted controllers re-queued evaluations
    assert figures["resumed_events"] >= 1, figures
    print(
        f"\n[sigkill] {database_url.split(':')[0]}: kills={server.kills} "
        f"finished evaluations at each kill={progress_at_kill} starts={server.starts} "
        f"start seconds={[round(s, 1) for s in server.start_seconds]} {figures}"
    )
