"""What every command module of the CLI shares: one way to fail, to read settings, to print.

Exit codes: 0 success; 1 the work itself failed (a campaign failed, the server is down or
broken: trying again later may help); 2 a usage error (an unknown command or option, a bad
file or value, a request the server refused as wrong: the command as given cannot succeed);
130 interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from layerforge.api.settings import Settings

USAGE = 2
FAILED = 1
INTERRUPTED = 130

stderr = Console(stderr=True)


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Call ``callback`` on SIGINT or SIGTERM (from the main thread), after cancelling any
    pending ``alarm``.

    Ray installs Abseil's failure-signal handler in the driver, and SIGTERM is one of its
    "failure" signals: it prints ``*** SIGTERM received ***``, arms ``alarm(3)`` with a
    handler that aborts the process, then passes the signal on to ours. A clean stop that
    took longer than 3 s (a campaign finishing its in-flight work, Ray shutting down) ended
    in SIGABRT (exit 134 to docker and systemd) at whatever it was doing by then. Cancelling
    the alarm here lets the stop finish.
    """
    import signal

    def handler(signum: int, frame: Any) -> None:
        signal.alarm(0)
        callback()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``error: message`` on stderr (one line, no traceback) and exit with ``code``."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


#: The command-line option of each setting that has one (its name in error messages).
OPTIONS = {
    "database_url": "--db",
    "evaluator": "--evaluator",
    "host": "--host",
    "port": "--port",
    "workers": "--workers",
}


def settings_or_exit(**overrides: Any) -> Settings:
    """The service's settings (``LAYERFORGE_*``), with each option the user gave on the
    command line in place of its setting: an option left unset (None) falls back to the
    setting, so every command reads its configuration the same way. A bad value exits 2
    naming the option it came from, or the variable."""
    from layerforge.api.settings import SettingsError, load_settings

    given = {
        k: v.value if isinstance(v, Enum) else v for k, v in overrides.items() if v is not None
    }
    try:
        return load_settings(**given)
    except SettingsError as err:
        message = str(err)
        for key in given:
            message = message.replace(f"LAYERFORGE_{key.upper()}", OPTIONS.get(key, key))
        fail(message)
