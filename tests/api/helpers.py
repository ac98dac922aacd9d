"""Shared helpers of the API tests: apps on temporary databases, specs, a live server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from layerforge.api.app import create_app
from layerforge.api.settings import load_settings
from tests.reliability.helpers import API, LAYERFORGE, Server  # noqa: F401 - API, LAYERFORGE re-exported


def small_spec(**overrides) -> dict:
    """A tiny activation campaign (the simulated evaluator finishes it in well under a second)."""
    spec = {
        "name": "tiny",
        "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
        "seeds": ["x * sigmoid(x)"],
        "strategy": {"name": "evolution", "population": 8, "tournament": 2},
        "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 30}],
        "rejection": {"quality_steps": 10},
        "budget": {"max_candidates": 12},
        "parallelism": 2,
    }
    spec.update(overrides)
    return spec


def make_app(tmp_path: Path, **overrides):
    """An app on a fresh SQLite file; the simulated evaluator unless told otherwise."""
    values = {
        "database_url": f"sqlite:///{tmp_path / 'api.db'}",
        "evaluator": "simulated",
        "run_controller": False,
        "api_token": None,
    }
    values.update(overrides)
    return create_app(load_settings(**values))


def wait_for(
    client, campaign_id: int, statuses=("completed", "failed", "cancelled"), timeout: float = 60.0
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"{API}/campaigns/{campaign_id}").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"campaign {campaign_id} still {body['status']}"
        time.sleep(0.1)


@contextmanager
def live_server(tmp_path: Path, env: dict[str, str] | None = None, args=()):
    """``layerforge serve`` in a subprocess on a free port (the simulated evaluator unless
    ``env`` says otherwise); yields its base URL."""
    server = Server(
        f"sqlite:///{tmp_path / 'live.db'}",
        tmp_path,
        env={"LAYERFORGE_EVALUATOR": "simulated", **(env or {})},
        args=tuple(args),
    )
    server.start(timeout=90)
    try:
        yield server.base
    finally:
        server.stop()


DASHBOARD_HARNESS = Path(__file__).with_name("dashboard_harness.js")


def render_dashboard(client, tmp_path: Path, hash_route: str, paths: list[str]) -> dict:
    """What the dashboard's own ``app.js`` renders for ``hash_route`` (run by Node on a
    minimal DOM, ``tests/api/dashboard_harness.js``), from the answers the real API gives to
    ``paths`` (``client``: anything with ``get(path)``, a TestClient or an httpx.Client)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node binary to run the dashboard's script (apt-get install nodejs)")
    recorded = {}
    for path in paths:
        response = client.get(API + path)
        assert response.status_code == 200, (path, response.text[:200])
        recorded[path.split("?")[0]] = response.json()
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(recorded))
    script = client.get("/static/app.js")
    assert script.status_code == 200
    served = tmp_path / "app.js"
    served.write_text(script.text)  # the script as the server serves it
    done = subprocess.run(
        [node, str(DASHBOARD_HARNESS), str(served), str(answers), hash_route],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)
