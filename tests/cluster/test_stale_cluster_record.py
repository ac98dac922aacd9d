"""The embedded default starts a Ray of its own, never the cluster Ray recorded last.

``ray start`` writes the address of the cluster it started to ``ray_current_cluster`` in
Ray's temp folder, and a bare ``ray.init()`` joins whatever that file names, even long after
the cluster died (``layerforge run`` hung for minutes on "Failed to connect to GCS"). Here
the file names a dead address (``RAY_TMPDIR`` points Ray at a temp folder of the test's own,
so the machine's ``/tmp/ray`` is never touched) and ``layerforge run`` on the default
evaluator (``ray``, no ``RAY_ADDRESS``) must start its own Ray and finish.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Evaluation
from tests.reliability.helpers import LAYERFORGE, TINY_REAL_SPEC, free_port

pytestmark = pytest.mark.slow


@pytest.mark.timeout(400)
def test_layerforge_run_ignores_a_dead_cluster_recorded_by_ray_start(tmp_path):
    # short: Ray's Unix sockets live under it (107 bytes at most per path)
    ray_tmp = Path(tempfile.mkdtemp(prefix="lf-stale-", dir="/tmp"))
    try:
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(dead + "\n")
        spec = copy.deepcopy(TINY_REAL_SPEC)
        spec["name"] = "stale-cluster-record"
        spec["budget"]["max_candidates"] = 4
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(spec))
        url = f"sqlite:///{tmp_path / 'run.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "LAYERFORGE_"))}
        env.update(
            RAY_TMPDIR=str(ray_tmp),
            RAY_USAGE_STATS_ENABLED="0",
            LAYERFORGE_DATABASE_URL=url,
            LAYERFORGE_WORKERS="1",
        )
        done = subprocess.run(
            [LAYERFORGE, "run", str(spec_file), "--quiet"],  # default evaluator: ray
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,  # a bare ray.init() retries the dead GCS for minutes, then fails
        )
        output = done.stdout[-3000:] + done.stderr[-3000:]
        assert done.returncode == 0, output
        assert "Failed to connect to GCS" not in output and dead not in output, output
        with session_scope(get_engine(url), readonly=True) as s:
            results = s.scalars(
                select(Evaluation.result).where(Evaluation.status == "completed")
            ).all()
        # evaluated by Ray actors (each result records its node), of a Ray started for the run
        assert len(results) == 4 and all("node" in r for r in results), results
        sessions = list((ray_tmp / "ray").glob("session_*"))
        assert sessions, "the run's own Ray did not start under RAY_TMPDIR"
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text().strip() == dead
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
