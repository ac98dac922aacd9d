"""``layerforge controller``: the campaign controller in its own process, beside a service
that runs none (LAYERFORGE_RUN_CONTROLLER=false), sharing one database."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx

from tests.api.helpers import small_spec
from tests.reliability.helpers import API, LAYERFORGE, Server, submit, wait_status


def test_a_service_without_controller_leaves_campaigns_to_the_controller_process(tmp_path):
    url = f"sqlite:///{tmp_path}/split.db"
    env = {"LAYERFORGE_RUN_CONTROLLER": "false", "LAYERFORGE_EVALUATOR": "simulated"}
    server = Server(url, tmp_path, env=env)
    server.start()
    controller = None
    try:
        campaign_id = submit(server.base, small_spec(budget={"max_candidates": 20}))
        time.sleep(1.5)  # the service runs no controller: the campaign waits
        assert httpx.get(f"{server.base}{API}/campaigns/{campaign_id}").json()["status"] == "queued"
        with open(tmp_path / "controller.log", "w") as log:
            controller = subprocess.Popen(
                [LAYERFORGE, "controller"],
                env=server.env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        body = wait_status(server.base, campaign_id, timeout=60)
        assert body["status"] == "completed", body
        assert sum(body["counts"].values()) == 20
        second = submit(server.base, small_spec(name="second", budget={"max_candidates": 5}))
        assert wait_status(server.base, second, timeout=30)["status"] == "completed"
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(timeout=30) == 0
        output = (tmp_path / "controller.log").read_text()
        assert "controller running campaigns" in output and "controller stopped" in output
    finally:
        if controller is not None and controller.poll() is None:
            controller.kill()
        server.stop()


def test_the_controller_command_fails_fast_on_bad_settings(tmp_path):
    done = subprocess.run(
        [LAYERFORGE, "controller"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "LAYERFORGE_MAX_CAMPAIGNS": "0",
            "LAYERFORGE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
    )
    assert done.returncode == 2
    assert "LAYERFORGE_MAX_CAMPAIGNS" in done.stderr and "Traceback" not in done.stderr
