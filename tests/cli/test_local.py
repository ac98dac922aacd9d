"""``layerforge run`` and the service commands read their settings one way: an option left
unset falls back to its LAYERFORGE_* variable, an option given wins over it (issue 13)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from layerforge.runs import CampaignResult
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from tests.reliability.helpers import LAYERFORGE

pytestmark = pytest.mark.slow

SPEC = """\
name: cli-run
space: {kind: activation, ops: swish, max_nodes: 4}
seeds: ["x * sigmoid(x)"]
strategy: {name: evolution, population: 4, tournament: 2}
proxies: [{arch: mlp, dataset: digits, steps: 20, batch_size: 64}]
rejection: {quality_steps: 5, quality_min_accuracy: 0.05}
budget: {max_candidates: 4}
parallelism: 1
"""


def cli(*args: str, env: dict[str, str], cwd: Path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFORGE_")}
    return subprocess.run(
        [LAYERFORGE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **env},
        cwd=cwd,
    )


def only_campaign(url: str) -> CampaignResult:
    with session_scope(get_engine(url), readonly=True) as s:
        (campaign,) = repo.list_campaigns(s)
        return CampaignResult(url, campaign.id, campaign.status)


def evaluations(result: CampaignResult) -> list[dict]:
    return [e for row in result.candidates for e in result.candidate(row.id)["evaluations"]]


def test_run_takes_the_evaluator_and_database_from_the_settings(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    url = f"sqlite:///{tmp_path / 'env.db'}"
    env = {"LAYERFORGE_EVALUATOR": "simulated", "LAYERFORGE_DATABASE_URL": url}
    first = cli("run", "spec.yaml", "--quiet", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Pareto front of campaign 1" in first.stdout and "campaign 1: completed" in first.stderr
    result = only_campaign(url)
    simulated = evaluations(result)
    assert simulated and all(
        not e["result"]["stages"]
        for e in simulated
        if e["status"] == "completed" and e["result"]["status"] == "completed"
    )
    assert {
        e["result"].get("reason") for e in simulated if e["result"]["status"] == "rejected"
    } <= {"simulated"}
    assert not (tmp_path / "layerforge.db").exists()  # the setting's database, not ./

    again = cli("run", "spec.yaml", "--quiet", env=env, cwd=tmp_path)
    assert again.returncode == 0 and only_campaign(url).campaign_id == result.campaign_id

    # an option given wins over its variable
    other = f"sqlite:///{tmp_path / 'option.db'}"
    local = cli(
        "run", "spec.yaml", "--db", other, "--evaluator", "local", "--quiet", env=env, cwd=tmp_path
    )
    assert local.returncode == 0, local.stderr
    trained = evaluations(only_campaign(other))
    assert trained and all(e["result"]["stages"] for e in trained)

    bad = cli("run", "spec.yaml", env={"LAYERFORGE_EVALUATOR": "gpu"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "error: LAYERFORGE_EVALUATOR: Input should be 'ray', 'local' or 'simulated'"
    )
    flag = cli("run", "spec.yaml", "--evaluator", "gpu", env={}, cwd=tmp_path)
    assert flag.returncode == 2 and "Invalid value for '--evaluator'" in flag.stderr


def test_db_upgrade_takes_its_database_from_the_option_or_the_setting(tmp_path):
    from_option = cli(
        "db", "upgrade", "--db", f"sqlite:///{tmp_path / 'a.db'}", env={}, cwd=tmp_path
    )
    assert from_option.returncode == 0 and "database at revision" in from_option.stdout
    assert (tmp_path / "a.db").exists()
    env = {"LAYERFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    from_setting = cli("db", "upgrade", env=env, cwd=tmp_path)
    assert from_setting.returncode == 0 and (tmp_path / "b.db").exists()
    wrong = cli("db", "upgrade", "--db", "mysql://nope", env={}, cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: --db='mysql://nope' names")
    env_wrong = cli("db", "upgrade", env={"LAYERFORGE_DATABASE_URL": "mysql://nope"}, cwd=tmp_path)
    assert env_wrong.returncode == 2
    assert env_wrong.stderr.startswith("error: LAYERFORGE_DATABASE_URL='mysql://nope' names")
