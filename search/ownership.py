"""Who runs a campaign: owner ids, and whether an owner's process is gone.

A runner owns a campaign through ``campaign.owner`` (an id from :func:`new_owner`: host,
pid and a random suffix) and a heart-beat; another runner may take the campaign over when
the heart-beat is stale or :func:`owner_is_dead` says the owner's process on this host no
longer runs (a SIGKILLed service leaves its campaigns owned by a dead pid).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

__all__ = ["new_owner", "owner_is_dead", "timestamp"]


def new_owner() -> str:
    """An owner id unique to this runner: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid_text) != os.getpid() and _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def timestamp(value) -> float:
    """Seconds since the epoch of a stored datetime (SQLite returns naive ones, in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()
