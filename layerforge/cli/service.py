"""Service commands: ``serve`` (API, dashboard and controller), ``controller``, ``db upgrade``.

Each option left unset falls back to its ``LAYERFORGE_*`` setting (see api/settings.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from layerforge.cli.common import fail, on_stop_signals, settings_or_exit

EVALUATOR_HELP = (
    "ray (local Ray or RAY_ADDRESS), local or simulated (default LAYERFORGE_EVALUATOR)."
)
DB_HELP = "Database URL (default LAYERFORGE_DATABASE_URL)."


class Evaluator(StrEnum):
    """The evaluators an ``--evaluator`` option may name (LAYERFORGE_EVALUATOR's values)."""

    ray = "ray"
    local = "local"
    simulated = "simulated"


def serve(
    host: str = typer.Option(None, help="Bind address (default LAYERFORGE_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default LAYERFORGE_PORT, 8000)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    evaluator: Evaluator = typer.Option(None, help=EVALUATOR_HELP),
    demo: bool = typer.Option(False, help="Submit a small demo campaign if none exists."),
    demo_candidates: int = typer.Option(
        None,
        help="With --demo: how many candidates the demo proposes (default 400, about "
        "3 minutes on 2 CPU cores; 16-1000).",
    ),
) -> None:
    """Run the HTTP service (API, dashboard and campaign controller)."""
    import sys

    import uvicorn

    from layerforge.api.app import create_app, demo_spec

    if demo_candidates is not None:
        if not demo:
            fail("--demo-candidates sizes the demo campaign: add --demo")
        try:
            demo_spec(demo_candidates)
        except ValueError as err:
            fail(f"--demo-candidates {err}")
    settings = settings_or_exit(host=host, port=port, database_url=db, evaluator=evaluator)
    application = create_app(settings)
    application.state.demo = demo
    application.state.demo_candidates = demo_candidates
    # httptools parses HTTP in C. The event loop stays asyncio's own: under 50 clients reading
    # the 1.4 MB Pareto answer, uvloop's transport.write held the interpreter for about half
    # of the server's time (benchmarks/RESULTS.md, API under load). A route's worker thread
    # that waits for the interpreter while the event loop serves cached answers got it back
    # only every 5 ms (the default switch interval), several times per request; 1 ms serves
    # more requests with a lower p99 on every endpoint.
    sys.setswitchinterval(0.001)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level="info",
        http="httptools",
        loop="asyncio",
    )
    _stoppable_server_class()(config).run()


def _stoppable_server_class() -> type[Any]:
    """uvicorn's ``Server`` with the alarm cancelled on a stop signal (uvicorn is imported
    only by ``serve``: the command line starts fast)."""
    import signal

    import uvicorn

    class StoppableServer(uvicorn.Server):
        """uvicorn's server, cancelling Ray's pending abort alarm on SIGINT / SIGTERM (see
        :func:`layerforge.cli.common.on_stop_signals`) so a graceful shutdown longer than
        3 s is not cut short by SIGABRT."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            signal.alarm(0)
            super().handle_exit(sig, frame)

    return StoppableServer


def controller(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    evaluator: Evaluator = typer.Option(None, help=EVALUATOR_HELP),
) -> None:
    """Run the campaign controller alone, without HTTP, until Ctrl-C or SIGTERM.

    For deployments that keep the API's processes free for readers: start the service with
    LAYERFORGE_RUN_CONTROLLER=false and this beside it on the same database. Campaigns are
    claimed through the database (owner and heartbeat), so several controllers and services
    can share one; a new submission is picked up within a second.
    """
    import threading

    from layerforge.api.app import (
        connect_evaluator_backend,
        disconnect_evaluator_backend,
        make_evaluator_factory,
        mlflow_observer,
    )
    from layerforge.search.manager import ControllerManager
    from layerforge.storage import StorageError, upgrade_database

    settings = settings_or_exit(database_url=db, evaluator=evaluator)
    try:
        upgrade_database(settings.database_url)
    except StorageError as err:
        fail(str(err))
    stop = threading.Event()
    on_stop_signals(stop.set)
    connect_evaluator_backend(settings)
    observer = mlflow_observer(settings)
    manager = ControllerManager(
        settings.database_url,
        make_evaluator_factory(settings),
        max_concurrent=settings.max_campaigns,
        runner_options={"on_progress": observer.on_progress} if observer else None,
    )
    manager.start()
    typer.echo(
        f"controller running campaigns from {settings.database_url} "
        f"(evaluator {settings.evaluator}, up to {settings.max_campaigns} at once)"
    )
    while not stop.wait(1.0):
        pass
    manager.stop()
    if observer is not None:
        observer.close()
    disconnect_evaluator_backend()
    typer.echo("controller stopped; running campaigns resume at the next start")


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Bring the database to the newest schema."""
    from layerforge.storage import StorageError, current_revision, upgrade_database

    settings = settings_or_exit(database_url=db)
    try:
        upgrade_database(settings.database_url)
    except StorageError as err:
        fail(str(err))
    typer.echo(f"database at revision {current_revision(settings.database_url)}")


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``controller`` and ``db`` to the CLI."""
    app.command()(serve)
    app.command()(controller)
    app.add_typer(db_app, name="db")
