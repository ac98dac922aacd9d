"""End to end over real HTTP: ``layerforge serve`` (uvicorn) on a free port, real training.

Submit a tiny campaign, poll it to completion, read the Pareto front, export the best
candidate as PyTorch, write the file, import it in a fresh interpreter and run it. (The CLI
client against a live server is tested in tests/cli/test_remote.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.helpers import API, live_server, small_spec

pytestmark = pytest.mark.slow

E2E_SPEC = small_spec(
    name="e2e",
    strategy={"name": "evolution", "population": 4, "tournament": 2},
    budget={"max_candidates": 6},
    parallelism=1,
)


def test_submit_poll_pareto_export_and_run_the_layer(tmp_path):
    with live_server(tmp_path, env={"LAYERFORGE_EVALUATOR": "local"}) as base:
        response = httpx.post(
            f"{base}{API}/campaigns", json=E2E_SPEC, headers={"Idempotency-Key": "e2e-1"}
        )
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        deadline = time.monotonic() + 240
        while True:
            body = httpx.get(base + location, timeout=10).json()
            if body["status"] in ("completed", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"still {body['status']}: {body['counts']}"
            time.sleep(1.0)
        assert body["status"] == "completed", body.get("error")
        assert sum(body["counts"].values()) == 6
        assert body["counts"]["completed"] >= 1

        pareto = httpx.get(f"{base}{location}/pareto").json()
        assert pareto["front"], pareto
        objective = pareto["objectives"][0]["name"]
        best = max(pareto["front"], key=lambda p: p["values"][objective])
        assert 0.0 < best["values"][objective] <= 1.0

        exported = httpx.get(
            f"{base}{API}/candidates/{best['candidate_id']}/export", params={"format": "pytorch"}
        )
        assert exported.status_code == 200
        filename = exported.headers["content-disposition"].split('filename="')[1].rstrip('"')
        assert filename == f"e2e_candidate_{best['candidate_id']}.py"
        (tmp_path / "out").mkdir()
        target = tmp_path / "out" / filename
        target.write_text(exported.text)

    script = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('layer', {str(target)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "cls = [v for k, v in vars(module).items() if isinstance(v, type)"
        " and issubclass(v, torch.nn.Module) and v.__module__ == 'layer'][0]\n"
        "x = torch.linspace(-3, 3, 7)\n"
        "y = cls()(x)\n"
        "assert y.shape == x.shape and torch.isfinite(y).all()\n"
        "assert 'layerforge' not in sys.modules and 'grammar' not in sys.modules\n"
        "print('OK', cls.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path / "out",
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")
