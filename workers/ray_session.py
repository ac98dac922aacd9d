"""The process's one connection to Ray, held by an owner thread that lives as long as the process.

Ray starts its local ``gcs_server`` and ``raylet`` with a parent-death signal bound to the
*thread* that forked them. Started from a campaign's short-lived thread, they die a second
after that thread ends, and the driver then aborts the whole process ("Failed to connect to
GCS within 60 seconds"). So no campaign connects to Ray itself: :func:`connect` hands the
work to one :class:`RayOwner` thread, started on the first call and kept until
:func:`shutdown` (called by ``layerforge serve``, ``controller`` and ``run`` on their way out,
and at interpreter exit). Every campaign of the process shares that connection.

Where Ray runs is decided here and only here:

* an explicit ``address`` (``RAY_ADDRESS`` or ``LAYERFORGE_RAY_ADDRESS``) joins that cluster;
* otherwise a new local Ray starts (``address="local"``): never the cluster that an earlier
  ``ray start`` on this machine recorded in Ray's temp folder, which may be long dead.

Ray 2.60 clusters started with ``ray start --head`` require a token (``RAY_AUTH_MODE=token``).
Every node and client of one cluster shares that token through ``RAY_AUTH_TOKEN`` (or
``LAYERFORGE_RAY_AUTH_TOKEN``); given one, the owner joins in token mode. An empty,
whitespace or non-printable token is refused at start-up (:func:`auth_token_from_env`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "AUTH_TOKEN_VARIABLES",
    "RayOwner",
    "RaySettings",
    "auth_token_from_env",
    "check_auth_token",
    "connect",
    "is_connected",
    "shutdown",
    "use_token_auth",
]

#: Where the cluster's token is read from, first found wins (``RAY_AUTH_TOKEN`` is Ray's own).
AUTH_TOKEN_VARIABLES = ("LAYERFORGE_RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN")


def check_auth_token(token: str, variable: str = "RAY_AUTH_TOKEN") -> str:
    """Return ``token`` if Ray can use it; raise ValueError naming ``variable`` otherwise.

    An empty or whitespace token would send clients to the cluster without credentials (they
    would be refused after minutes of retries); Ray's tokens are printable ASCII (hex)."""
    if not token.strip():
        raise ValueError(f"{variable} is empty or only whitespace: set the cluster's token")
    if token != token.strip():
        raise ValueError(f"{variable} starts or ends with whitespace")
    bad = next((c for c in token if not (c.isascii() and c.isprintable())), None)
    if bad is not None:
        raise ValueError(f"{variable} holds {bad!r}: a Ray token is printable ASCII")
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        raise ValueError(
            f"{variable} is set but RAY_AUTH_MODE is {mode!r}: set RAY_AUTH_MODE=token "
            "(or leave it unset) to join a cluster with token authentication"
        )
    return token


def auth_token_from_env() -> str | None:
    """The Ray cluster token from the environment (see :data:`AUTH_TOKEN_VARIABLES`), checked
    by :func:`check_auth_token`; None when no variable is set."""
    for variable in AUTH_TOKEN_VARIABLES:
        value = os.environ.get(variable)
        if value is not None:
            return check_auth_token(value, variable)
    return None


@dataclass(frozen=True)
class RaySettings:
    """How to reach Ray: a cluster ``address`` to join, or a new local Ray (``None``)."""

    address: str | None = None
    num_cpus: int | None = None
    auth_token: str | None = field(default=None, repr=False)
    init_kwargs: dict[str, Any] = field(default_factory=dict)


class RayOwner:
    """A long-lived thread that starts (or joins) Ray, keeps it, and shuts it down.

    ``start`` blocks until Ray is up (or raises what ``ray.init`` raised); ``stop`` asks the
    thread to call ``ray.shutdown`` and waits for it.
    """

    def __init__(self, settings: RaySettings):
        self.settings = settings
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._own, name="layerforge-ray-owner", daemon=True)

    def start(self, timeout_s: float = 300.0) -> None:
        """Start the owner thread and wait until Ray is connected."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"Ray did not start within {timeout_s:.0f} s ({self.describe()})")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 30.0) -> None:
        """Disconnect (a local Ray's processes end with it) and end the owner thread."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """True while the owner holds a connection."""
        return self._thread.is_alive() and self._error is None and self._ready.is_set()

    def describe(self) -> str:
        """Where this owner connects, in words (for logs and errors)."""
        if self.settings.address:
            return f"the Ray cluster at {self.settings.address}"
        return "a new local Ray"

    def _own(self) -> None:
        import ray

        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {"log_to_driver": False}
            kwargs.update(self.settings.init_kwargs)
            if self.settings.address:
                if self.settings.auth_token:
                    use_token_auth(self.settings.auth_token)
                ray.init(address=self.settings.address, **kwargs)
            else:
                kwargs.setdefault("include_dashboard", False)
                if self.settings.num_cpus is not None:
                    kwargs.setdefault("num_cpus", self.settings.num_cpus)
                ray.init(address="local", **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the caller of start()
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()
        try:
            ray.shutdown()
        except Exception:
            log.exception("ray.shutdown failed")


def use_token_auth(token: str) -> None:
    """Switch this process's Ray client to token authentication with ``token``.

    Ray reads ``RAY_AUTH_MODE`` into its C++ config when ``ray`` is imported and caches the
    token once loaded, so setting the variables later is not enough: both are reloaded, as
    ``ray.init`` itself does when it turns token mode on for a new local cluster."""
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token
    try:
        from ray._raylet import (  # type: ignore[attr-defined]  # compiled, no stubs
            AuthenticationTokenLoader,
            Config,
        )
    except ImportError:  # a Ray without token authentication: nothing more to tell it
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


_lock = threading.Lock()
_owner: RayOwner | None = None


def connect(settings: RaySettings | None = None) -> None:
    """Make sure this process is connected to Ray, through the one owner thread.

    Safe from any thread and idempotent: the first call starts the owner, later calls return
    at once. A Ray that something else initialised in this process (a test session's
    ``ray.init``) is used as it is and left to its owner.
    """
    global _owner
    import ray

    with _lock:
        if _owner is not None and _owner.alive:
            return
        if _owner is None and ray.is_initialized():
            return
        owner = RayOwner(settings or RaySettings())
        log.info("connecting to %s", owner.describe())
        owner.start()
        _owner = owner


def is_connected() -> bool:
    """True when this process holds a Ray connection (its own or one made elsewhere)."""
    import ray

    return ray.is_initialized()


def shutdown(timeout_s: float = 30.0) -> None:
    """Disconnect from Ray if this module connected; a local Ray's processes stop with it."""
    global _owner
    with _lock:
        owner, _owner = _owner, None
    if owner is not None:
        owner.stop(timeout_s)


atexit.register(shutdown)
