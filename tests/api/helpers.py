"""Shared helpers of the API tests: apps on temporary databases, specs, a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from api.app import create_app
from api.settings import load_settings

LAYERFORGE = str(Path(sys.executable).with_name("layerforge"))
API = "/api/v1"


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
    values = {"database_url": f"sqlite:///{tmp_path / 'api.db'}", "evaluator": "simulated",
              "run_controller": False, "api_token": None}
    values.update(overrides)
    return create_app(load_settings(**values))


def wait_for(client, campaign_id: int, statuses=("completed", "failed", "cancelled"),
             timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"{API}/campaigns/{campaign_id}").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"campaign {campaign_id} still {body['status']}"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(tmp_path: Path, env: dict[str, str] | None = None, args=()):
    """``layerforge serve`` in a subprocess on a free port; yields its base URL."""
    port = free_port()
    full_env = {**os.environ, "LAYERFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
                "LAYERFORGE_PORT": str(port), "LAYERFORGE_EVALUATOR": "simulated",
                **(env or {})}
    if "LAYERFORGE_API_TOKEN" not in (env or {}):
        full_env.pop("LAYERFORGE_API_TOKEN", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([LAYERFORGE, "serve", *args], env=full_env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError("server exited:\n" + (tmp_path / "server.log").read_text())
            assert time.monotonic() < deadline, "server did not start within 90 s"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
