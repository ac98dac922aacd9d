"""A real multi-process Ray cluster with token authentication, started once per test module.

``ray start --head --num-cpus=0`` plus worker nodes started with ``ray start --address=...``,
each a separate process tree with its own raylet, all sharing one generated token through
``RAY_AUTH_TOKEN`` (with ``RAY_AUTH_MODE=token``: Ray 2.60 turns token authentication on
for ``ray start --head``). The cluster lives in a temp folder of its own (``--temp-dir``), so
it never records itself in the machine's ``/tmp/ray``, and its processes are ended by PID:
never ``ray stop``, which would end every other Ray on the machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.helpers import alive, descendants_named, free_port

RAY = str(Path(sys.executable).with_name("ray"))
#: 100 MB of object store per node (the default takes 30 % of the machine's memory).
OBJECT_STORE_BYTES = str(100 * 1024 * 1024)
NODE_ID_LINE = re.compile(r"Setting node ID node_id=([0-9a-f]+)")


@dataclass
class RayNode:
    """One ``ray start --block`` process and the Ray processes under it."""

    name: str
    proc: subprocess.Popen
    log: Path
    raylet_pid: int = 0
    node_id: str = ""
    pids: set[int] = field(default_factory=set)  # every process seen under this node

    def refresh_pids(self) -> None:
        """Remember every live process under the node (to end them by PID later)."""
        self.pids |= set(descendants_named(self.proc.pid, ("",)))

    @property
    def running(self) -> bool:
        return self.proc.poll() is None and alive(self.raylet_pid)


class RayCluster:
    """A head node with no CPUs and worker nodes with one CPU each, on this machine."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.token = secrets.token_hex(32)
        # short: Ray's Unix sockets live under it (107 bytes at most per path)
        self.temp_dir = tempfile.mkdtemp(prefix="lf-ray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "LAYERFORGE_"))}
        self.env = {
            **base,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        self._count = 0

    # ------------------------------------------------------------------ nodes
    def _start(self, name: str, args: list[str], timeout: float = 120.0) -> RayNode:
        log = self.folder / f"{name}.log"
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [RAY, "start", *args, f"--object-store-memory={OBJECT_STORE_BYTES}", "--block"],
                env=self.env,
                cwd=self.folder,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run reaches pytest, not Ray
            )
        node = RayNode(name, proc, log)
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log.read_text()}")
            assert time.monotonic() < deadline, f"{name} did not start:\n{log.read_text()}"
            time.sleep(0.2)
        raylets = [p for p, n in descendants_named(proc.pid, ("raylet",)).items()]
        assert len(raylets) == 1, (name, raylets)
        node.raylet_pid = raylets[0]
        node.node_id = self._node_id_of(node.raylet_pid)
        node.refresh_pids()
        return node

    def _node_id_of(self, raylet_pid: int) -> str:
        """The node id a raylet logged at start-up (``raylet*.out`` of the session)."""
        logs = Path(self.temp_dir, "session_latest", "logs")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for path in logs.glob("raylet*.out"):
                for line in path.read_text(errors="replace").splitlines():
                    found = NODE_ID_LINE.search(line)
                    if found and f" {raylet_pid} " in line:
                        return found.group(1)
            time.sleep(0.2)
        raise AssertionError(f"no node id logged by raylet {raylet_pid} under {logs}")

    def start_head(self) -> RayNode:
        """``ray start --head --num-cpus=0``: it schedules, it evaluates nothing."""
        self.head = self._start(
            "head",
            [
                "--head",
                "--num-cpus=0",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={free_port()}",
            ],
        )
        return self.head

    def add_worker(self) -> RayNode:
        """A new worker node (its own raylet) with one CPU, joined with the token."""
        self._count += 1
        node = self._start(
            f"worker-{self._count}",
            [
                f"--address={self.address}",
                "--num-cpus=1",
                f"--dashboard-agent-listen-port={free_port()}",
            ],
        )
        self.workers.append(node)
        return node

    def live_workers(self) -> list[RayNode]:
        return [w for w in self.workers if w.running]

    def ensure_workers(self, count: int) -> list[RayNode]:
        """Start worker nodes until ``count`` are running; return the running ones."""
        while len(self.live_workers()) < count:
            self.add_worker()
        return self.live_workers()

    def sigkill_raylet(self, node: RayNode) -> None:
        """SIGKILL the node's raylet, as a machine failure would; its ``ray start`` then
        ends the rest of the node."""
        node.refresh_pids()
        os.kill(node.raylet_pid, signal.SIGKILL)
        try:
            node.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        self._end(node)

    def _end(self, node: RayNode) -> None:
        """End every process seen under the node, by PID (SIGTERM, then SIGKILL)."""
        if node.proc.poll() is None:
            node.refresh_pids()
        pids = sorted(node.pids | {node.proc.pid})
        # what is still alive 3 s after SIGTERM gets SIGKILL: the fixture's job is to leave
        # nothing behind, not to wait out Ray's own shutdown (teardowns took 11-13 s at 10 s)
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            for pid in pids:
                if alive(pid):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + grace
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
        if node.proc.poll() is None:
            node.proc.wait(timeout=10)

    def stop(self) -> None:
        """End every node this cluster started (workers first), by PID."""
        for node in [*self.workers, *([self.head] if self.head else [])]:
            self._end(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def client_env(self) -> dict[str, str]:
        """What a service or ``layerforge run`` needs to join: address, token, token mode."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """A head (0 CPUs) and two worker nodes (1 CPU each) for the whole module."""
    cluster = RayCluster(tmp_path_factory.mktemp("ray-cluster"))
    try:
        cluster.start_head()
        cluster.ensure_workers(2)
        yield cluster
    finally:
        cluster.stop()
