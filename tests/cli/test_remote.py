"""The ``layerforge`` client commands end to end: the installed script against live servers.

Two servers per module (``layerforge serve`` subprocesses on SQLite): one runs campaigns
with the simulated evaluator (the evaluator is not what these tests are about) and needs a
token; one runs no controller, so campaigns stay exactly where the test puts them (pause,
resume, cancel, delete, and a campaign with no completed candidate).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from layerforge.cli.remote import progress_line
from layerforge.client import Client
from tests.reliability.helpers import LAYERFORGE, Server

pytestmark = pytest.mark.slow

TOKEN = "cli-token"
YAML_SPEC = """\
name: cli-yaml
space: {kind: activation, ops: swish, max_nodes: 4}
seeds: ["x * sigmoid(x)"]
strategy: {name: evolution, population: 8, tournament: 2}
proxies:
  - {arch: mlp, dataset: mnist1d, steps: 30}
budget: {max_candidates: 8}
parallelism: 1
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the installed ``layerforge`` script (in ``cwd``, else the module's scratch
    folder, never the repository); no LAYERFORGE_* setting leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFORGE_")}
    return subprocess.run(
        [LAYERFORGE, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**base, **(env or {})},
        cwd=cwd or SCRATCH[0],
    )


SCRATCH: list[Path] = []  # the folder commands run in when the test names none


@pytest.fixture(autouse=True, scope="module")
def scratch(tmp_path_factory):
    SCRATCH[:] = [tmp_path_factory.mktemp("cwd")]
    yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli")
    (path / "spec.yaml").write_text(YAML_SPEC)
    return path


@pytest.fixture(scope="module")
def server(folder):
    """Runs campaigns (simulated, 0.3 s each) and wants the token on mutating calls."""
    running = Server(
        f"sqlite:///{folder / 'live.db'}",
        folder,
        env={
            "LAYERFORGE_EVALUATOR": "simulated",
            "LAYERFORGE_SIMULATED_SECONDS": "0.3",
            "LAYERFORGE_API_TOKEN": TOKEN,
        },
    )
    running.start(timeout=120)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idle(folder):
    """Runs no campaign: each stays in the status the test gives it."""
    (folder / "idle").mkdir()
    running = Server(
        f"sqlite:///{folder / 'idle.db'}",
        folder / "idle",
        env={"LAYERFORGE_EVALUATOR": "simulated", "LAYERFORGE_RUN_CONTROLLER": "false"},
    )
    running.start(timeout=120)
    yield running
    running.stop()


def test_submit_watch_status_list_pareto_candidates_export_delete(server, folder):
    # a URL without a scheme, from the environment; the token from the environment too
    env = {"LAYERFORGE_SERVER": f"127.0.0.1:{server.port}", "LAYERFORGE_API_TOKEN": TOKEN}
    refused = cli("submit", "spec.yaml", env={"LAYERFORGE_SERVER": server.base}, cwd=folder)
    assert refused.returncode == 2, refused.stderr
    assert "401" in refused.stderr and "Bearer" in refused.stderr

    # the same with --server (no scheme) and --token given as options
    submitted = cli(
        "submit", "spec.yaml", "--server", f"127.0.0.1:{server.port}", "--token", TOKEN, cwd=folder
    )
    assert submitted.returncode == 0, submitted.stderr
    cid = int(submitted.stdout.strip())
    assert f"campaign {cid} (cli-yaml) is" in submitted.stderr
    # Paused at once (the pause command itself is tested on the idle server), so that watch
    # starts while the campaign is unfinished; resumed while it watches.
    client = Client(server.base, TOKEN)
    client.pause_campaign(cid)

    watcher = subprocess.Popen(
        [LAYERFORGE, "watch", str(cid), "--server", server.base],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()
    assert first.startswith(f"campaign {cid} paused, "), first
    client.resume_campaign(cid)
    rest, errors = watcher.communicate(timeout=180)
    assert watcher.returncode == 0, errors
    assert f"campaign {cid} completed" in errors

    every_event = []
    for event in client.events(cid):
        if event.kind == "progress":
            every_event.append(progress_line(cid, event.data))
        elif event.kind == "status":
            every_event.append(f"campaign {cid} status: {event.data['from']} -> {event.data['to']}")
    printed = rest.splitlines()
    # one line per progress and status event since the first line, none repeated from before
    assert printed == every_event[len(every_event) - len(printed) :]
    resumed = printed.index(f"campaign {cid} status: paused -> running")
    assert sum(" candidates (" in line for line in printed[resumed:]) >= 2
    assert printed[-1] == f"campaign {cid} status: running -> completed"

    status = cli("status", str(cid), "--json", "--server", server.base)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    table = cli("status", str(cid), env=env)
    assert "completed" in table.stdout and "8 / 8" in table.stdout

    listed = cli("list", env=env)
    assert listed.returncode == 0 and "cli-yaml" in listed.stdout and "8 / 8" in listed.stdout
    as_json = json.loads(cli("list", "--status", "completed", "--json", env=env).stdout)
    assert [item["id"] for item in as_json] == [cid]
    assert json.loads(cli("list", "--status", "running", "--json", env=env).stdout) == []

    pareto = client.get_pareto(cid)
    front = cli("pareto", str(cid), env=env)
    assert front.returncode == 0 and "Pareto front" in front.stdout
    assert all(point["text"] in front.stdout for point in pareto["front"])
    assert json.loads(cli("pareto", str(cid), "--json", env=env).stdout) == pareto

    objective = pareto["objectives"][0]["name"]
    ranked = cli("candidates", str(cid), "--sort", objective, "--status", "completed", env=env)
    assert ranked.returncode == 0, ranked.stderr
    best = client.best_candidate(cid)
    assert best["text"] in ranked.stdout and str(best["id"]) in ranked.stdout
    top = json.loads(
        cli("candidates", str(cid), "--sort", objective, "--limit", "1", "--json", env=env).stdout
    )
    assert [c["id"] for c in top] == [best["id"]]

    out = folder / "layer.py"
    exported = cli("export", str(best["id"]), "-f", "pytorch", "-o", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert out.read_text() == client.export_candidate(best["id"], "pytorch")
    by_campaign = cli("export", "--campaign", str(cid), "--format", "latex", env=env)
    assert by_campaign.returncode == 0, by_campaign.stderr
    assert by_campaign.stdout == client.export_candidate(best["id"], "latex")
    assert f"best candidate {best['id']}" in by_campaign.stderr
    wrong = cli("export", "--campaign", str(cid), "--objective", "beauty", env=env)
    assert wrong.returncode == 2 and "'beauty' is not an objective" in wrong.stderr
    bad_format = cli("export", str(best["id"]), "--format", "cobol", env=env)
    assert bad_format.returncode == 2 and "format" in bad_format.stderr

    downloaded = cli("download", "pareto", str(cid), "-o", str(folder), env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    saved = folder / f"campaign_{cid}_pareto.csv"
    assert saved.read_bytes() == client.download_pareto(cid)
    assert f"wrote {saved}" in downloaded.stderr
    history = cli("download", "hypervolume", str(cid), "-f", "svg", "-o", "-", env=env)
    assert history.returncode == 0 and "<svg" in history.stdout

    deleted = cli("delete", str(cid), env=env)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"campaign {cid} deleted"
    gone = cli("status", str(cid), env=env)
    assert gone.returncode == 2 and f"campaign {cid} does not exist" in gone.stderr


def test_pause_resume_cancel_delete_and_nothing_to_export(idle, folder):
    env = {"LAYERFORGE_SERVER": idle.base}
    cid = int(cli("submit", "spec.yaml", env=env, cwd=folder).stdout.strip())
    here = folder / "idle-cwd"
    here.mkdir()

    def act(*args: str):
        return cli(*args, str(cid), env=env, cwd=here)

    assert act("pause").stdout.strip() == f"campaign {cid} is paused"
    again = act("pause")
    assert again.returncode == 2 and "409" in again.stderr and "cannot pause" in again.stderr
    # --server without a scheme, as an option (the environment's server is another one)
    resumed = cli(
        "resume",
        str(cid),
        "--server",
        idle.base.removeprefix("http://"),
        env={"LAYERFORGE_SERVER": "127.0.0.1:9"},
    )
    assert resumed.stdout.strip() == f"campaign {cid} is running", resumed.stderr
    busy = act("delete")
    assert busy.returncode == 2 and "cancel it first" in busy.stderr
    nothing = act("export", "--campaign")
    assert nothing.returncode == 2
    assert f"campaign {cid} (running) has no completed candidate to export yet" in nothing.stderr
    figure = act("download", "pareto")
    assert figure.returncode == 2 and "409" in figure.stderr
    assert f"campaign {cid} has no completed candidate yet" in figure.stderr
    assert not list(here.iterdir())  # nothing written
    assert act("cancel").stdout.strip() == f"campaign {cid} is cancelled"
    watched = act("watch")
    assert watched.returncode == 0 and f"campaign {cid} cancelled" in watched.stderr
    assert watched.stdout.startswith(f"campaign {cid} cancelled, 0/8 candidates")
    assert act("delete").returncode == 0
    twice = act("delete")
    assert twice.returncode == 2 and "404" in twice.stderr


def test_yaml_and_json_submit_the_same_spec_and_bad_files_are_usage_errors(idle, folder):
    env = {"LAYERFORGE_SERVER": idle.base}
    client = Client(idle.base)
    json_file = folder / "spec.json"
    import yaml

    json_file.write_text(json.dumps(yaml.safe_load(YAML_SPEC)))
    before = len(list(client.iter_campaigns()))
    from_json = int(cli("submit", str(json_file), env=env).stdout.strip())
    from_yaml = int(cli("submit", str(folder / "spec.yaml"), env=env).stdout.strip())
    assert client.get_campaign(from_json)["spec"] == client.get_campaign(from_yaml)["spec"]

    broken = folder / "broken.yaml"
    broken.write_text("name: x\nspace: {kind: activation\nproxies: []\n")
    for command in ("submit", "run"):
        result = cli(command, str(broken), env=env, cwd=folder)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{broken}: not valid YAML at line 3, column 8" in result.stderr
        assert "Traceback" not in result.stderr

    invalid = folder / "invalid.yaml"
    invalid.write_text(YAML_SPEC.replace("budget:", "budjet:"))
    refused = cli("submit", str(invalid), env=env)
    assert refused.returncode == 2
    assert "422: body.budjet: unknown field (did you mean 'budget'?)" in refused.stderr
    local = cli("run", str(invalid), "--db", f"sqlite:///{folder / 'never.db'}")
    assert (
        local.returncode == 2 and "budjet: unknown field (did you mean 'budget'?)" in local.stderr
    )
    assert not (folder / "never.db").exists()
    assert len(list(client.iter_campaigns())) == before + 2  # nothing from the refused one


def test_usage_errors_and_a_dead_server():
    unknown = cli("lst")
    assert unknown.returncode == 2
    assert (
        unknown.stderr
        == "error: No such command 'lst'. Did you mean 'list'? (see 'layerforge --help')\n"
    )
    option = cli("status", "1", "--sever", "x")
    assert option.returncode == 2
    assert option.stderr == (
        "error: No such option: --sever (Possible options: --server) "
        "(see 'layerforge status --help')\n"
    )
    zero = cli("status", "0")
    assert zero.returncode == 2
    assert zero.stderr.startswith("error: Invalid value for 'CAMPAIGN_ID': ")
    assert "greater than or equal to 1" in zero.stderr
    missing = cli("show")
    assert missing.returncode == 2 and "Missing option '--expr'" in missing.stderr
    bare = cli()
    assert bare.returncode == 2 and "Usage: layerforge" in bare.stdout + bare.stderr
    scheme = cli("list", "--server", "ftp://127.0.0.1:1")
    assert scheme.returncode == 2 and "the scheme must be http or https" in scheme.stderr
    dead = cli("status", "1", "--server", "127.0.0.1:9")
    assert dead.returncode == 1
    assert "cannot reach the layerforge service at http://127.0.0.1:9" in dead.stderr
    no_file = cli("submit", "no-such-spec.yaml", "--server", "127.0.0.1:9")
    assert no_file.returncode == 2 and "no-such-spec.yaml: no such file" in no_file.stderr


def test_spec_schema_and_the_module_entry_point(folder):
    import sys

    from layerforge.specs import spec_schema

    printed = cli("spec-schema")
    assert printed.returncode == 0 and json.loads(printed.stdout) == spec_schema()
    target = folder / "spec.schema.json"
    written = cli("spec-schema", "-o", str(target))
    assert written.returncode == 0 and json.loads(target.read_text()) == spec_schema()
    version = subprocess.run(
        [sys.executable, "-m", "layerforge", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("layerforge ")
