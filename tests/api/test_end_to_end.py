"""End to end over real HTTP: ``layerforge serve`` (uvicorn) on a free port, real training.

Submit a tiny campaign, poll it to completion, read the Pareto front, export the best
candidate as PyTorch, write the file, import it in a fresh interpreter and run it. Then the
CLI client against a live server: submit, status, watch, pareto, export, and its errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.helpers import API, LAYERFORGE, live_server, small_spec

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


def cli(*args, env=None):
    return subprocess.run(
        [LAYERFORGE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_client_against_a_live_server(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(small_spec(name="cli-run")))
    token = "cli-token"
    with live_server(tmp_path, env={"LAYERFORGE_API_TOKEN": token}) as base:
        env = {"LAYERFORGE_SERVER": base}
        refused = cli("submit", str(spec_file), env=env)
        assert refused.returncode == 2 and "401" in refused.stderr and "Bearer" in refused.stderr
        submitted = cli("submit", str(spec_file), "--token", token, env=env)
        assert submitted.returncode == 0, submitted.stderr
        cid = int(submitted.stdout.strip().splitlines()[-1])

        watched = cli("watch", str(cid), env=env)
        assert watched.returncode == 0, watched.stderr
        assert f"campaign {cid} completed" in watched.stderr

        status = cli("status", str(cid), "--json", "--server", base)
        assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
        table = cli("status", str(cid), env=env)
        assert "completed" in table.stdout and "12 / 12" in table.stdout

        front = cli("pareto", str(cid), env=env)
        assert front.returncode == 0 and "Pareto front" in front.stdout
        data = httpx.get(f"{base}{API}/campaigns/{cid}/pareto").json()
        best = data["front"][0]
        assert best["text"] in front.stdout

        out = tmp_path / "layer.py"
        exported = cli(
            "export", str(best["candidate_id"]), "--format", "pytorch", "-o", str(out), env=env
        )
        assert exported.returncode == 0, exported.stderr
        assert "import torch" in out.read_text()
        latex = cli("export", str(best["candidate_id"]), "--format", "latex", env=env)
        assert latex.returncode == 0 and latex.stdout.strip()

        missing = cli("status", "999", env=env)
        assert missing.returncode == 2 and "campaign 999 does not exist" in missing.stderr
        bad_format = cli("export", str(best["candidate_id"]), "--format", "cobol", env=env)
        assert bad_format.returncode == 2 and "format" in bad_format.stderr
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text(json.dumps(small_spec(budget={"max_candidates": -1})))
    with live_server(tmp_path) as base:
        invalid = cli("submit", str(bad_spec), "--server", base)
        assert invalid.returncode == 2
        assert "body.budget.max_candidates" in invalid.stderr
    unreachable = cli("status", "1", "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
