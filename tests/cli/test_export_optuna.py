"""``layerforge export-optuna`` end to end: the installed script against a live server,
the study read back with Optuna, and its errors as one line with the usage exit code."""

from __future__ import annotations

import os
import subprocess

import optuna
import pytest

from layerforge.client import Client
from tests.api.helpers import live_server, small_spec
from tests.reliability.helpers import LAYERFORGE

pytestmark = pytest.mark.slow


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """The installed ``layerforge`` script; no LAYERFORGE_* setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFORGE_")}
    return subprocess.run(
        [LAYERFORGE, *args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd
    )


def test_export_optuna_writes_a_study_optuna_loads(tmp_path):
    spec = small_spec(strategy={"name": "optuna", "sampler": "tpe"}, budget={"max_candidates": 10})
    with live_server(tmp_path) as base, Client(base) as client:
        campaign_id = client.create_campaign(spec)["id"]
        assert client.wait(campaign_id, timeout=120)["status"] == "completed"
        storage = f"sqlite:///{tmp_path / 'studies.db'}"
        done = cli("export-optuna", str(campaign_id), "--storage", storage, "--study", "s1",
                   "--server", base, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "as study 's1'" in done.stdout
        study = optuna.load_study(study_name="s1", storage=storage)
        completed = client.get_campaign(campaign_id)["counts"]["completed"]
        assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == completed
        front = {p["candidate_id"] for p in client.get_pareto(campaign_id)["front"]}
        assert {t.user_attrs["candidate_id"] for t in study.best_trials} == front

        again = cli("export-optuna", str(campaign_id), "--storage", storage, "--study", "s1",
                    "--server", base, cwd=tmp_path)  # fmt: skip
        assert again.returncode == 2 and "already has a study 's1'" in again.stderr
        bad = cli("export-optuna", str(campaign_id), "--storage", "nonsense://x",
                  "--server", base, cwd=tmp_path)  # fmt: skip
        assert bad.returncode == 2
        assert "cannot open the Optuna storage 'nonsense://x'" in bad.stderr
        missing = cli("export-optuna", "999", "--storage", storage, "--server", base, cwd=tmp_path)
        assert missing.returncode == 2 and "campaign 999 does not exist" in missing.stderr
