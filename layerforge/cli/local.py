"""Campaigns run in this process: ``layerforge run SPEC`` and ``layerforge spec-schema``.

``run`` is :func:`layerforge.run` with a progress bar: the campaign is stored in the
database at ``--db`` under a key made from the spec, so running the same command again after
a crash or Ctrl-C resumes the same campaign instead of starting a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from layerforge.cli.common import (
    FAILED,
    INTERRUPTED,
    fail,
    on_stop_signals,
    settings_or_exit,
    stderr,
)
from layerforge.cli.service import DB_HELP, EVALUATOR_HELP, Evaluator


def run(
    spec_file: Path = typer.Argument(..., help="Campaign spec (JSON or YAML)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    evaluator: Evaluator = typer.Option(None, help=EVALUATOR_HELP),
    workers: int = typer.Option(None, help="Ray evaluator actors (default LAYERFORGE_WORKERS)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Run a campaign here (resuming it if it was interrupted) and print its Pareto front."""
    import threading

    from layerforge.cli.remote import pareto_table
    from layerforge.errors import LayerforgeError, SpecError
    from layerforge.runs import run as run_campaign
    from layerforge.specs import validate
    from layerforge.storage import StorageError

    settings = settings_or_exit(database_url=db, evaluator=evaluator, workers=workers)
    try:
        validate(spec_file)
    except SpecError as err:
        fail(str(err) if str(err).startswith(str(spec_file)) else f"{spec_file}: {err}")
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        result = run_campaign(
            spec_file,
            database=settings.database_url,
            evaluator=settings.evaluator,
            workers=settings.workers,
            progress=not quiet,
            stop=stop,
        )
    except (StorageError, LayerforgeError) as err:
        fail(str(err), FAILED)
    finally:
        from layerforge.workers import ray_session

        ray_session.shutdown()
    stderr.print(f"campaign {result.campaign_id}: {result.status}")
    from layerforge.search.queries import pareto_of_campaign
    from layerforge.storage import CampaignStatus

    Console(width=200).print(
        pareto_table(
            pareto_of_campaign(result.database_url, result.campaign_id), result.campaign_id
        )
    )
    if result.status == "stopped":
        raise typer.Exit(INTERRUPTED)
    exits_cleanly = (CampaignStatus.COMPLETED, CampaignStatus.PAUSED, CampaignStatus.CANCELLED)
    if result.status not in exits_cleanly:
        raise typer.Exit(FAILED)


def spec_schema(
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
) -> None:
    """Print the JSON Schema of a campaign spec (for editors, YAML language servers, Hydra)."""
    from layerforge.specs import spec_schema as schema

    text = json.dumps(schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}")
    stderr.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``spec-schema`` to the CLI."""
    app.command("run")(run)
    app.command("spec-schema")(spec_schema)
