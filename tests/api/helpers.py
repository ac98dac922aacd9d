"""Shared helpers of the API tests: apps on temporary databases, specs, a live server."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

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
