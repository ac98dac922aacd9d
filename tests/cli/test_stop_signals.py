"""SIGINT and SIGTERM stop ``layerforge serve``, ``controller`` and ``run`` on the default
(Ray) evaluator within 30 s, in the middle of a campaign, and leave no Ray process behind.

Each command starts its own local Ray (only the database URL is set, so nothing swaps the
evaluator); the test waits until an evaluation is running on it, records every process
under the command (raylet, gcs_server, the evaluator actors, Ray's helpers), sends the
signal and checks that the command exits in time and that none of those processes is left.
``tests/api/test_serve_default_ray.py`` covers SIGTERM of ``serve`` after a long run.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from layerforge.search.queries import create_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage.models import Evaluation
from tests.reliability.helpers import (
    LAYERFORGE,
    TINY_REAL_SPEC,
    alive,
    descendants_named,
    free_port,
)

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 30.0
RAY_DAEMONS = ("raylet", "gcs_server")

# training steps enough to keep the campaign busy for minutes
LONG_SPEC = copy.deepcopy(TINY_REAL_SPEC)
LONG_SPEC["name"] = "stopped-by-a-signal"
LONG_SPEC["proxies"][0]["steps"] = 20_000
LONG_SPEC["budget"]["max_candidates"] = 50


def running_evaluations(url: str) -> int:
    try:
        with session_scope(get_engine(url), readonly=True) as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Evaluation)
                    .where(Evaluation.status == "running")
                )
                or 0
            )
    except Exception:  # noqa: BLE001 - the command has not created its tables yet
        return 0


def start(command: str, folder: Path, url: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERFORGE_", "RAY_"))}
    env.update(LAYERFORGE_DATABASE_URL=url, LAYERFORGE_WORKERS="1", PYTHONUNBUFFERED="1")
    if command == "run":
        spec_file = folder / "spec.json"
        spec_file.write_text(json.dumps(LONG_SPEC))
        args = ["run", str(spec_file), "--quiet"]
    else:
        upgrade_database(url)
        create_campaign(url, validate_spec(LONG_SPEC))
        args = ["serve", "--port", str(free_port())] if command == "serve" else ["controller"]
    log = folder / f"{command}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [LAYERFORGE, *args], env=env, cwd=folder, stdout=handle, stderr=subprocess.STDOUT
        )
    return proc, log


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("command", "signum"),
    [
        ("serve", signal.SIGINT),
        ("controller", signal.SIGINT),
        ("controller", signal.SIGTERM),
        ("run", signal.SIGINT),
        ("run", signal.SIGTERM),
    ],
    ids=["serve-SIGINT", "controller-SIGINT", "controller-SIGTERM", "run-SIGINT", "run-SIGTERM"],
)
def test_a_signal_stops_the_command_mid_campaign_and_leaves_no_ray_process(
    tmp_path, command, signum
):
    url = f"sqlite:///{tmp_path / 'signals.db'}"
    proc, log = start(command, tmp_path, url)
    try:
        deadline = time.monotonic() + 300
        while running_evaluations(url) == 0:
            assert proc.poll() is None, (
                f"{command} exited with {proc.returncode}:\n"
                + (log.read_text(errors="replace")[-3000:])
            )
            assert time.monotonic() < deadline, (
                "no evaluation started in 300 s:\n" + (log.read_text(errors="replace")[-3000:])
            )
            time.sleep(0.5)
        time.sleep(2.0)  # into the training, on a Ray actor
        processes = descendants_named(proc.pid, ("",))
        assert set(RAY_DAEMONS) <= set(processes.values()), processes  # its own local Ray
        assert any(name.startswith("ray::") for name in processes.values()), processes

        proc.send_signal(signum)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{command} did not stop within {STOP_WITHIN_S:.0f} s of {signum.name}:\n"
                + log.read_text(errors="replace")[-3000:]
            ) from None
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-3000:]
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = sorted(f"{name} {pid}" for pid, name in processes.items() if alive(pid))
    assert not left, f"processes left behind by {command} after {signum.name}: {left}"
    print(f"\n[{command} {signum.name}] stopped in {seconds:.1f} s, {len(processes)} processes")
    # a clean exit: 0, 130 (run: interrupted), or the signal re-raised by Ray's core worker
    # handler once the process has cleaned up; never SIGABRT (it aborted in the interpreter's
    # final garbage collection after a SIGTERM until the console script left by os._exit)
    assert proc.returncode in (0, 130, -signum), (proc.returncode, output[-3000:])
