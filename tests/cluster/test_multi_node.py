"""The service and ``layerforge run`` on a real multi-node Ray cluster with token auth.

The module's cluster (tests/cluster/conftest.py): a head with 0 CPUs and worker nodes with
1 CPU each, every node its own ``ray start`` process tree. ``layerforge serve`` and
``layerforge run`` join it through ``RAY_ADDRESS`` with the cluster's token, evaluating on
the ``ray`` evaluator (two actors of one CPU, so one per worker node).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Evaluation
from tests.api.helpers import render_dashboard
from tests.cluster.conftest import RAY as RAY_CLI
from tests.cluster.conftest import RayCluster
from tests.reliability.helpers import (
    API,
    LAYERFORGE,
    TINY_REAL_SPEC,
    Server,
    campaign_invariants,
    submit,
    wait_status,
)

pytestmark = pytest.mark.slow


def cluster_server(cluster: RayCluster, database_url: str, folder: Path) -> Server:
    """``layerforge serve`` joined to the cluster, its campaigns on the ``ray`` evaluator."""
    return Server(
        database_url,
        folder,
        env={
            **cluster.client_env(),
            "LAYERFORGE_EVALUATOR": "ray",
            "LAYERFORGE_WORKERS": "2",
            "LAYERFORGE_WORKER_CPUS": "1",
        },
    )


def spec_with(budget: int, steps: int, name: str) -> dict:
    """TINY_REAL_SPEC with another budget and training length."""
    spec = copy.deepcopy(TINY_REAL_SPEC)
    spec["name"] = name
    spec["budget"]["max_candidates"] = budget
    spec["proxies"][0]["steps"] = steps
    return spec


def search_evaluations(url: str, campaign_id: int) -> list[Evaluation]:
    with session_scope(get_engine(url), readonly=True) as s:
        rows = s.scalars(
            select(Evaluation).where(
                Evaluation.campaign_id == campaign_id, Evaluation.kind == "search"
            )
        ).all()
        s.expunge_all()
        return list(rows)


def completed_count(url: str, campaign_id: int) -> int:
    return sum(e.status == "completed" for e in search_evaluations(url, campaign_id))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(interval)


@pytest.mark.timeout(300)
def test_the_cluster_refuses_a_node_without_its_token(ray_cluster, tmp_path):
    """Token authentication is on: a node joining in the default mode is turned away."""
    env = {**ray_cluster.env, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_TOKEN")
    done = subprocess.run(
        [RAY_CLI, "start", f"--address={ray_cluster.address}", "--num-cpus=1", "--block"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode != 0
    assert "InvalidAuthToken" in done.stdout + done.stderr
    assert len(ray_cluster.live_workers()) == 2  # and the cluster is as it was


# The database is not what these two tests are about (every storage test runs on both): the
# placement test stores on a SQLite file, the node-loss test on PostgreSQL, as a cluster
# deployment would; each backend is exercised under a real multi-node cluster once.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_evaluations_run_on_the_worker_nodes_and_the_api_shows_where(
    ray_cluster, database_url, tmp_path
):
    workers = ray_cluster.ensure_workers(2)
    worker_ids = {w.node_id for w in workers}
    server = cluster_server(ray_cluster, database_url, tmp_path)
    server.start()
    try:
        campaign_id = submit(server.base, spec_with(12, 40, "on-the-cluster"))
        body = wait_status(server.base, campaign_id, timeout=600)
        assert body["status"] == "completed", (body, server.log_tail())
        assert body["waiting"] is None
        figures = campaign_invariants(database_url, campaign_id, 12)

        page = httpx.get(
            f"{server.base}{API}/campaigns/{campaign_id}/candidates",
            params={"limit": 100},
            timeout=30,
        ).json()
        nodes_seen: list[str] = []
        for item in page["items"]:
            detail = httpx.get(f"{server.base}{API}/candidates/{item['id']}", timeout=30).json()
            for evaluation in detail["evaluations"]:
                if evaluation["kind"] == "search" and evaluation["status"] == "completed":
                    node = evaluation["result"]["node"]
                    assert set(node) >= {"node_id", "node_ip", "hostname", "actor_id", "pid"}
                    nodes_seen.append(node["node_id"])
    finally:
        server.stop()
    assert nodes_seen, figures
    assert ray_cluster.head is not None
    assert ray_cluster.head.node_id not in nodes_seen  # the head has no CPUs
    assert set(nodes_seen) == worker_ids, (set(nodes_seen), worker_ids)
    assert "Failed to connect to GCS" not in server.logs()


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_losing_every_worker_node_waits_then_finishes_exactly_its_budget(
    ray_cluster, database_url, tmp_path
):
    budget = 14
    first, second = ray_cluster.ensure_workers(2)[:2]
    server = cluster_server(ray_cluster, database_url, tmp_path)
    server.start()
    try:
        campaign_id = submit(server.base, spec_with(budget, 300, "node-loss"))
        url = database_url

        # 1. one worker node's raylet dies mid-evaluation: its work moves to the other node
        def both_running():
            evaluations = search_evaluations(url, campaign_id)
            done = sum(e.status == "completed" for e in evaluations)
            running = sum(e.status == "running" for e in evaluations)
            return done >= 2 and running == 2

        wait_for(both_running, 600, "two evaluations done and two running")
        done_before_kill = completed_count(url, campaign_id)
        ray_cluster.sigkill_raylet(first)
        wait_for(
            lambda: completed_count(url, campaign_id) >= done_before_kill + 1,
            600,
            "the campaign going on on the surviving node",
        )
        assert wait_status(server.base, campaign_id, 5, statuses=("running",))

        # 2. the last worker node dies: the campaign waits and says so; it neither fails
        # nor spins
        done_at_second_kill = completed_count(url, campaign_id)
        ray_cluster.sigkill_raylet(second)
        assert not ray_cluster.live_workers()
        t_all_lost = time.monotonic()

        def waiting_message():
            body = httpx.get(f"{server.base}{API}/campaigns/{campaign_id}", timeout=10).json()
            return body["waiting"] if body["status"] == "running" else None

        message = wait_for(waiting_message, 120, "the campaign says it waits for Ray workers")
        assert message.startswith("waiting for Ray workers"), message
        seconds_to_report = time.monotonic() - t_all_lost
        done_while_waiting = completed_count(url, campaign_id)
        cpu_before = cpu_seconds(server.pid)
        time.sleep(10)
        cpu_used = cpu_seconds(server.pid) - cpu_before
        body = httpx.get(f"{server.base}{API}/campaigns/{campaign_id}", timeout=10).json()
        assert body["status"] == "running" and body["waiting"], body
        assert completed_count(url, campaign_id) == done_while_waiting
        assert cpu_used < 4.0, f"the waiting service used {cpu_used:.1f} CPU s in 10 s"
        # the dashboard's campaign page says so too
        c = f"/campaigns/{campaign_id}"
        with httpx.Client(base_url=server.base, timeout=10) as client:
            shown = render_dashboard(
                client,
                tmp_path,
                f"#{c}",
                [c, f"{c}/pareto", f"{c}/hypervolume?max_points=1000", f"{c}/candidates?limit=20"],
            )
        assert shown["waiting"]["hidden"] is False, shown
        assert shown["waiting"]["text"].startswith("Waiting: waiting for Ray workers"), shown

        # 3. a new worker node joins: the campaign resumes and completes its budget
        t_join = time.monotonic()
        joined_at = max(
            e.finished_at for e in search_evaluations(url, campaign_id) if e.finished_at
        )
        third = ray_cluster.add_worker()
        wait_for(
            lambda: completed_count(url, campaign_id) > done_while_waiting,
            600,
            "an evaluation on the new node",
        )
        seconds_to_recover = time.monotonic() - t_join
        body = wait_status(server.base, campaign_id, timeout=900)
        assert body["status"] == "completed", (body, server.log_tail())
        assert body["waiting"] is None
        figures = campaign_invariants(url, campaign_id, budget)
    finally:
        server.stop()

    evaluations = search_evaluations(url, campaign_id)
    assert all(e.status == "completed" for e in evaluations), [
        (e.id, e.status, e.error) for e in evaluations
    ]
    nodes = [e.result["node"]["node_id"] for e in evaluations]
    after_join = [e.result["node"]["node_id"] for e in evaluations if e.finished_at > joined_at]
    assert after_join and set(after_join) == {third.node_id}, (after_join, third.node_id)
    assert ray_cluster.head is not None and ray_cluster.head.node_id not in nodes
    requeued = server.logs().count("re-queued")
    assert requeued >= 1, server.logs()[-4000:]
    record = {
        "kills": 2,
        "candidates": budget,
        "duplicates_evaluated_twice": 0,  # campaign_invariants: one search evaluation each
        "lost": 0,  # every evaluation completed
        "requeued_evaluations": requeued,
        "completed_at_first_kill": done_before_kill,
        "completed_at_second_kill": done_at_second_kill,
        "completed_while_waiting": done_while_waiting,
        "evaluations_per_node": {n[:8]: nodes.count(n) for n in sorted(set(nodes))},
        "seconds_to_report_waiting": round(seconds_to_report, 1),
        "waiting_cpu_seconds_in_10s": round(cpu_used, 2),
        "seconds_to_recover_after_join": round(seconds_to_recover, 1),
        "waiting_message": message,
        "invariants": figures,
    }
    print("MULTI-NODE FIGURES", json.dumps(record))


@pytest.mark.timeout(900)
def test_layerforge_run_joins_the_cluster_through_ray_address(ray_cluster, tmp_path):
    workers = ray_cluster.ensure_workers(2)
    worker_ids = {w.node_id for w in workers}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec_with(8, 40, "run-on-the-cluster")))
    url = f"sqlite:///{tmp_path / 'run.db'}"
    env = {
        **ray_cluster.env,
        **ray_cluster.client_env(),
        "LAYERFORGE_EVALUATOR": "ray",  # read by run as by serve: no --evaluator given
        "LAYERFORGE_WORKERS": "2",
        "LAYERFORGE_DATABASE_URL": url,
    }
    del env["RAY_AUTH_MODE"]  # given a token, layerforge joins in token mode by itself
    done = subprocess.run(
        [LAYERFORGE, "run", str(spec_file), "--quiet"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "completed" in done.stderr
    with session_scope(get_engine(url), readonly=True) as s:
        results = s.scalars(select(Evaluation.result).where(Evaluation.status == "completed")).all()
    nodes = {r["node"]["node_id"] for r in results}
    # evaluated by the cluster's worker nodes, not by a Ray of its own nor in-process
    assert nodes and nodes <= worker_ids, (nodes, worker_ids)


@pytest.mark.timeout(300)
def test_layerforge_run_takes_its_evaluator_from_layerforge_evaluator(ray_cluster, tmp_path):
    """``layerforge run`` with no ``--evaluator`` reads LAYERFORGE_EVALUATOR as serve does:
    here ``simulated``, so nothing goes to the cluster named by RAY_ADDRESS."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec_with(6, 40, "run-simulated")))
    url = f"sqlite:///{tmp_path / 'run.db'}"
    env = {
        **ray_cluster.env,
        **ray_cluster.client_env(),
        "LAYERFORGE_EVALUATOR": "simulated",
        "LAYERFORGE_DATABASE_URL": url,
    }
    done = subprocess.run(
        [LAYERFORGE, "run", str(spec_file), "--quiet"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with session_scope(get_engine(url), readonly=True) as s:
        results = s.scalars(select(Evaluation.result).where(Evaluation.status == "completed")).all()
    assert len(results) == 6
    assert all("node" not in r for r in results)  # simulated: no Ray actor evaluated them
