"""The ``layerforge`` command line: run the service, manage the database, work with layers."""

from __future__ import annotations

import typer

from layerforge.api import layerforge_version

app = typer.Typer(
    name="layerforge",
    help="Discover activation functions and normalization-activation layers by evolution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with ``code`` (no traceback)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def settings_or_exit(**overrides):
    """Load settings, turning a configuration error into a clean exit."""
    from layerforge.api.settings import SettingsError, load_settings

    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as err:
        fail(str(err))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"layerforge {layerforge_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """layerforge: evolutionary search for activation and normalization-activation layers."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default 127.0.0.1, LAYERFORGE_HOST)."),
    port: int = typer.Option(None, help="Port (default 8000, LAYERFORGE_PORT)."),
    demo: bool = typer.Option(False, help="Submit a small demo campaign if none exists."),
) -> None:
    """Run the HTTP service (API, dashboard and campaign controller)."""
    import sys

    import uvicorn

    from layerforge.api.app import create_app

    settings = settings_or_exit(host=host, port=port)
    application = create_app(settings)
    application.state.demo = demo
    # httptools parses HTTP in C. The event loop stays asyncio's own: under 50 clients reading
    # the 1.4 MB Pareto answer, uvloop's transport.write held the interpreter for about half
    # of the server's time here (329 against 473 requests/s, p99 870 against 150 ms).
    # A route's worker thread that waits for the interpreter while the event loop serves
    # cached answers got it back only every 5 ms (the default switch interval), several
    # times per request; at 1 ms, 50 clients got 793 instead of 725 requests/s here, and
    # every endpoint's p99 fell (candidate detail 286 -> 238 ms, Pareto 140 -> 107 ms).
    sys.setswitchinterval(0.001)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="info",
        http="httptools",
        loop="asyncio",
    )


@app.command()
def controller() -> None:
    """Run the campaign controller alone, without HTTP, until Ctrl-C or SIGTERM.

    For deployments that keep the API's processes free for readers: start the service with
    LAYERFORGE_RUN_CONTROLLER=false and this beside it on the same database. Campaigns are
    claimed through the database (owner and heartbeat), so several controllers and services
    can share one; a new submission is picked up within a second.
    """
    import signal
    import threading

    from layerforge.api.app import (
        connect_evaluator_backend,
        disconnect_evaluator_backend,
        make_evaluator_factory,
        mlflow_observer,
    )
    from layerforge.search.manager import ControllerManager
    from layerforge.storage import StorageError, upgrade_database

    settings = settings_or_exit()
    try:
        upgrade_database(settings.database_url)
    except StorageError as err:
        fail(str(err))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database at LAYERFORGE_DATABASE_URL to the newest schema."""
    from layerforge.storage import StorageError, current_revision, upgrade_database

    settings = settings_or_exit()
    try:
        upgrade_database(settings.database_url)
    except StorageError as err:
        fail(str(err))
    typer.echo(f"database at revision {current_revision(settings.database_url)}")


def _register_command_groups() -> None:
    """Add the commands that live beside this file (grammar tools, campaigns, client)."""
    import importlib
    import importlib.util

    for module_name in (
        "layerforge.api.cli_grammar",
        "layerforge.api.cli_campaigns",
        "layerforge.api.cli_client",
    ):
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(app)


_register_command_groups()
