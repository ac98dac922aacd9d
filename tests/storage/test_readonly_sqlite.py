"""A read-only SQLite database stops start-up with a message naming the path, never a
SIGBUS and never a service that answers every write with "retry shortly".

The database sits on a real read-only mount: a bind mount remounted ``ro`` in a private
mount namespace (``unshare -m``, which needs root; the tests run as root here, where a
``chmod`` would not stop writes). As another user a ``chmod a-w`` of the folder and file is
used instead. Two states are tried: a clean database (SQLite cannot create ``-wal`` and
``-shm``) and one left with its ``-wal`` and ``-shm`` by a writer that was SIGKILLed (SQLite
would map the read-only ``-shm`` and read, but no write could succeed).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from layerforge.storage import create_engine_for, session_scope, upgrade_database
from tests.reliability.helpers import LAYERFORGE, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KILLED_WRITER = """
import os, signal, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode = WAL")
connection.execute("INSERT INTO event (campaign_id, kind, payload, created_at) "
                   "SELECT id, 'note', '{}', created_at FROM campaign")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _read_only_command(source: Path, view: Path, command: list[str]) -> list[str]:
    """``command`` run where ``view`` shows ``source`` read-only."""
    if os.geteuid() != 0:
        return command
    script = (
        f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(view))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(view))} && exec "
        + " ".join(shlex.quote(part) for part in command)
    )
    return ["unshare", "-m", "sh", "-c", script]


@pytest.fixture
def read_only_database(tmp_path: Path, request: pytest.FixtureRequest):
    """(source folder, the path commands must use, a wrapper that runs a command read-only)."""
    source, view = tmp_path / "data", tmp_path / "view"
    source.mkdir()
    view.mkdir()
    db = source / "layerforge.db"
    url = f"sqlite:///{db}"
    upgrade_database(url)
    with session_scope(create_engine_for(url)) as s:
        from layerforge.storage import repository as repo

        repo.create_campaign(
            s, name="kept", spec={}, space_kind="activation", strategy="random", objectives=[]
        )
    if request.param == "left_over_wal":
        subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
    if os.geteuid() != 0:
        for path in source.iterdir():
            path.chmod(0o444)
        source.chmod(0o555)
        yield source, db, lambda command: command
        source.chmod(0o755)
        return
    probe = subprocess.run(
        _read_only_command(source, view, ["touch", str(view / "probe")]),
        capture_output=True,
        text=True,
    )
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"no read-only bind mount here (unshare -m / mount): {probe.stderr.strip()}")
    yield source, view / db.name, lambda command: _read_only_command(source, view, command)


def _assert_refused_naming(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode != -signal.SIGBUS and result.returncode > 0, (
        result.returncode,
        result.stdout[-3000:],
    )
    assert f"the SQLite database file {path} is read-only" in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("read_only_database", ["clean", "left_over_wal"], indirect=True)
def test_serve_controller_and_db_upgrade_on_a_read_only_database_fail_naming_the_path(
    read_only_database, tmp_path: Path
):
    source, db, read_only = read_only_database
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    env = {
        **os.environ,
        "LAYERFORGE_EVALUATOR": "simulated",
        "LAYERFORGE_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LAYERFORGE_API_TOKEN", None)
    for command in (
        [LAYERFORGE, "db", "upgrade", "--db", f"sqlite:///{db}"],
        [LAYERFORGE, "serve", "--db", f"sqlite:///{db}"],
        [LAYERFORGE, "controller", "--db", f"sqlite:///{db}"],
    ):
        result = subprocess.run(
            read_only(command),
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        result.stdout += result.stderr
        _assert_refused_naming(result, db)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_root_can_write_a_chmod_444_file_so_it_is_not_refused(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("only root writes a chmod 444 file")
    db = tmp_path / "mode444.db"
    url = f"sqlite:///{db}"
    upgrade_database(url)
    db.chmod(0o444)
    engine = create_engine_for(url)
    with session_scope(engine) as s:
        from layerforge.storage import repository as repo

        repo.create_campaign(
            s, name="written", spec={}, space_kind="activation", strategy="random", objectives=[]
        )
    engine.dispose()
