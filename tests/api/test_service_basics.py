"""The first CLI commands and /healthz, over real HTTP and through the console script."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from layerforge.api.settings import SettingsError, load_settings
from layerforge.storage import head_revision
from tests.reliability.helpers import LAYERFORGE, free_port


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [LAYERFORGE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("layerforge 0.")


def test_db_upgrade_creates_the_schema(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'lf.db'}"
    result = run_cli("db", "upgrade", env={"LAYERFORGE_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()}" in result.stdout
    assert (tmp_path / "lf.db").stat().st_size > 0


@pytest.mark.parametrize("url", ["mysql://root@localhost/x", "sqlite:////nope/dir/lf.db", "::"])
def test_a_bad_database_url_fails_at_start_and_creates_nothing(tmp_path: Path, url: str):
    result = run_cli("serve", env={"LAYERFORGE_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 2
    assert "LAYERFORGE_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_settings_default_to_loopback_and_name_bad_variables(monkeypatch):
    monkeypatch.delenv("LAYERFORGE_HOST", raising=False)
    assert load_settings().host == "127.0.0.1"
    monkeypatch.setenv("LAYERFORGE_PORT", "99999")
    with pytest.raises(SettingsError, match="LAYERFORGE_PORT"):
        load_settings()
    monkeypatch.delenv("LAYERFORGE_PORT")
    monkeypatch.setenv("LAYERFORGE_SIMULATED_SECONDS", "-1")
    with pytest.raises(SettingsError, match="LAYERFORGE_SIMULATED_SECONDS"):
        load_settings()
    monkeypatch.setenv("LAYERFORGE_SIMULATED_SECONDS", "0.25")
    monkeypatch.setenv("LAYERFORGE_EVALUATOR", "simulated")
    from layerforge.api.app import make_evaluator_factory

    assert make_evaluator_factory(load_settings())().seconds == 0.25


def test_serve_answers_healthz_over_http(tmp_path: Path):
    port = free_port()
    env = {
        "LAYERFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}",
        "LAYERFORGE_PORT": str(port),
        "LAYERFORGE_RUN_CONTROLLER": "false",
    }
    proc = subprocess.Popen(
        [LAYERFORGE, "serve"],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the server did not start within 60 s"
                time.sleep(0.3)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["database"] == {
            "backend": "sqlite",
            "ok": True,
            "revision": head_revision(),
            "head": head_revision(),
        }
        assert body["version"].startswith("0.")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
