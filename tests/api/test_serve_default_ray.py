"""`layerforge serve --demo` exactly as a user runs it: the default (Ray) evaluator, kept up
well past its first campaign, then a second campaign over HTTP, then a clean stop.

Version 0.1 started Ray in the short-lived per-campaign thread; Ray's gcs_server and raylet
died with that thread and the whole service exited 60-140 s after its first campaign. Only
the database URL is set here (the port goes on the command line), so nothing swaps the
evaluator.

The demo proposes 40 candidates (``--demo-candidates``) instead of its 400: the same search,
Ray workers and held-out transfer check, with a tenth of the candidates. What this test is
about is the service's lifetime after a real campaign on Ray, which the full demo's other
360 candidates do not change (tests/api/test_demo.py checks the full demo's spec;
docs/RELIABILITY.md records the full demo run by hand).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.api.helpers import small_spec
from tests.reliability.helpers import (
    API,
    LAYERFORGE,
    alive,
    descendants_named,
    free_port,
    submit,
    wait_healthy,
    wait_status,
)

pytestmark = [pytest.mark.slow, pytest.mark.starts_first]

RAY_DAEMONS = ("raylet", "gcs_server")
KEPT_UP_S = 100.0
DEMO_CANDIDATES = 40


@pytest.mark.timeout(1500)
def test_serve_demo_with_default_ray_evaluator_outlives_its_campaigns(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERFORGE_", "RAY_"))}
    env["LAYERFORGE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'serve.db'}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                LAYERFORGE,
                "serve",
                "--demo",
                "--demo-candidates",
                str(DEMO_CANDIDATES),
                "--port",
                str(port),
            ],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    daemons: dict[int, str] = {}
    phases: dict[str, float] = {}
    t_start = time.monotonic()
    try:
        wait_healthy(base, proc, timeout=120, log_tail=log_tail)
        phases["healthy"] = time.monotonic() - t_start
        assert f"http://127.0.0.1:{port}" in log_tail()  # the log says where to open it

        items = httpx.get(f"{base}{API}/campaigns", timeout=10).json()["items"]
        assert [c["name"] for c in items] == ["demo-swish"]
        demo_id = items[0]["id"]
        demo = wait_status(base, demo_id, timeout=900)
        assert demo["status"] == "completed", (demo, log_tail())
        assert demo["progress"]["candidates"] == DEMO_CANDIDATES
        # the held-out check ran on Ray too: the demo's winners were re-trained
        transfer = httpx.get(f"{base}{API}/campaigns/{demo_id}/transfer", timeout=10).json()
        rows = transfer["rows"]
        origins = {r["origin"] for r in rows}
        assert {"baseline", "control"} <= origins, rows
        assert all(r["runs"] == 3 for r in rows), rows  # 3 held-out seeds each
        # the top 3 (the baseline is one of them when it ranks there)
        assert 2 <= len([r for r in rows if r["origin"] not in ("baseline", "control")]) <= 3
        phases["demo done"] = time.monotonic() - t_start
        daemons = descendants_named(proc.pid, RAY_DAEMONS)
        assert sorted(set(daemons.values())) == sorted(RAY_DAEMONS), (daemons, log_tail())

        # the failure mode of 0.1: the service died 60-140 s after its first campaign
        kept_until = time.monotonic() + KEPT_UP_S
        while time.monotonic() < kept_until:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log_tail()}"
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            dead = [f"{name} {pid}" for pid, name in daemons.items() if not alive(pid)]
            assert not dead, f"Ray daemons died after the first campaign: {dead}"
            time.sleep(2)

        second = submit(base, small_spec(name="after-the-demo"))
        body = wait_status(base, second, timeout=300)
        assert body["status"] == "completed", (body, log_tail())
        assert body["progress"]["candidates"] == 12
        phases["second done"] = time.monotonic() - t_start
        assert "Failed to connect to GCS" not in log_tail()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("serve did not stop within 60 s of SIGTERM") from None
            stop_seconds = time.monotonic() - t0
        else:
            stop_seconds = 0.0
    # uvicorn shuts down cleanly ("Finished server process"); Ray's core worker installs a
    # SIGTERM handler that re-raises the signal once the process exits, hence -SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM), (proc.returncode, log_tail())
    assert "Finished server process" in log_tail()
    assert stop_seconds < 30, f"SIGTERM took {stop_seconds:.1f} s"
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [f"{name} {pid}" for pid, name in daemons.items() if alive(pid)]
    assert not left, f"Ray processes left behind after a clean stop: {left}"
    phases["stopped"] = stop_seconds
    print("\n[serve default ray] " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
