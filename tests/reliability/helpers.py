"""Shared pieces of the reliability suite: a killable ``layerforge serve``, the invariants
every campaign must keep after faults, and small HTTP helpers.

Used by the tests in this folder and by ``python -m tests.reliability.soak``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select

from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from layerforge.storage.models import Candidate, Evaluation

LAYERFORGE = str(Path(sys.executable).with_name("layerforge"))
API = "/api/v1"
FINISHED = ("completed", "failed", "cancelled")

# A real campaign small enough for a test: an MLP on scikit-learn's digits (offline), a few
# dozen steps; one evaluation takes a fraction of a second to a second on a loaded CPU.
TINY_REAL_SPEC = {
    "name": "reliability",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "seeds": ["x * sigmoid(x)", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 6, "tournament": 3},
    "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64}],
    "rejection": {"quality_steps": 10, "quality_min_accuracy": 0.1},
    "budget": {"max_candidates": 12, "max_seconds": 3600},
    "parallelism": 2,
    "seed": 3,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS`` of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def listening_addresses(pid: int) -> list[str]:
    """``host:port`` of every TCP socket the process listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/{pid}/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A = LISTEN
                    host, port = local.split(":")
                    if width == 8:
                        address = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    else:
                        address = "::1" if host == "0" * 24 + "01000000" else host
                    found.append(f"{address}:{int(port, 16)}")
    return found


def wait_healthy(
    base: str, proc: subprocess.Popen, *, timeout: float, log_tail: Callable[[], str]
) -> None:
    """Wait until ``{base}/healthz`` answers 200; fail with the server's log if the process
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n" + log_tail())
        assert time.monotonic() < deadline, f"server did not start in {timeout} s"
        time.sleep(0.1)


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, command name, state) for every process, read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = (int(ppid), name, state)
    return table


def descendants_named(root: int, prefixes: tuple[str, ...]) -> dict[int, str]:
    """Live (not zombie) processes under ``root`` whose command name starts with one of
    ``prefixes`` (for example Ray's ``raylet`` and ``gcs_server``)."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _name, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            _ppid, name, state = table[child]
            if name.startswith(prefixes) and state != "Z":
                found[child] = name
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Server:
    """``layerforge serve`` in a subprocess that can be SIGKILLed and restarted on the same
    database and port."""

    def __init__(
        self,
        database_url: str,
        folder: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ):
        self.database_url = database_url
        self.folder = Path(folder)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LAYERFORGE_DATABASE_URL": database_url,
            "LAYERFORGE_PORT": str(self.port),
            "LAYERFORGE_EVALUATOR": "local",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for name in ("LAYERFORGE_API_TOKEN", "LAYERFORGE_HOST"):
            if name not in (env or {}):
                self.env.pop(name, None)
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0
        self.start_seconds: list[float] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until ``/healthz`` answers."""
        self.starts += 1
        log = open(self.folder / f"server-{self.starts}.log", "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [LAYERFORGE, "serve", *self.args],
            env=self.env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_healthy(self.base, self.proc, timeout=timeout, log_tail=self.log_tail)
        self.start_seconds.append(time.monotonic() - t0)

    def sigkill(self) -> None:
        """SIGKILL the server (no clean shutdown: the controller dies mid-whatever)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        path = self.folder / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            (self.folder / f"server-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
            if (self.folder / f"server-{i}.log").exists()
        )


def submit(base: str, spec: dict, **headers: str) -> int:
    response = httpx.post(f"{base}{API}/campaigns", json=spec, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def campaign_invariants(url: str, campaign_id: int, budget: int) -> dict:
    """The promises of search/campaign.py after any fault: the campaign completed, it has
    exactly ``budget`` candidates with seq 0..budget-1, every non-duplicate candidate has
    exactly one search evaluation and it finished, nothing is left queued or running.

    Returns figures for the record (statuses, resumed events, evaluation statuses).
    """
    with session_scope(get_engine(url), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        assert campaign.status == "completed", (campaign.status, campaign.error)
        candidates = s.scalars(select(Candidate).where(Candidate.campaign_id == campaign_id)).all()
        assert len(candidates) == budget, f"{len(candidates)} candidates, budget {budget}"
        assert sorted(c.seq for c in candidates) == list(range(budget))
        statuses = Counter(c.status for c in candidates)
        assert set(statuses) <= {"completed", "rejected", "failed", "duplicate"}, statuses
        per_candidate = dict(
            s.execute(
                select(Evaluation.candidate_id, func.count())
                .where(Evaluation.campaign_id == campaign_id, Evaluation.kind == "search")
                .group_by(Evaluation.candidate_id)
            ).all()
        )
        for candidate in candidates:
            expected = 0 if candidate.status == "duplicate" else 1
            assert per_candidate.get(candidate.id, 0) == expected, (
                candidate.id,
                candidate.text,
                candidate.status,
                per_candidate.get(candidate.id),
            )
        assert not repo.unfinished_evaluations(s, campaign_id=campaign_id)
        evaluations = Counter(
            s.scalars(select(Evaluation.status).where(Evaluation.campaign_id == campaign_id)).all()
        )
        events = repo.list_events(s, campaign_id=campaign_id, limit=1_000_000)
        resumed = [e.payload for e in events if e.kind == "resumed"]
        return {
            "candidates": dict(statuses),
            "evaluations": dict(evaluations),
            "resumed_events": len(resumed),
            "requeued": sum(int((p or {}).get("requeued", 0)) for p in resumed),
        }


def wait_status(base: str, campaign_id: int, timeout: float, statuses=FINISHED) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            body = httpx.get(f"{base}{API}/campaigns/{campaign_id}", timeout=10).json()
            if body["status"] in statuses:
                return body
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"campaign {campaign_id} did not finish in {timeout} s"
        time.sleep(0.2)
