"""``layerforge run SPEC.json``: run a campaign locally with a live progress bar.

The campaign is stored in the database at ``--db`` (default: ``LAYERFORGE_DATABASE_URL``,
i.e. ``./layerforge.db``) under an idempotency key made from the spec, so running the same
command again after a crash resumes the same campaign instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from layerforge.api.cli import fail, settings_or_exit

console = Console(stderr=True)


def load_spec_file(path: Path):
    """Read and validate a spec file; exits with a message naming the problem."""
    from layerforge.search.spec import SpecError, validate_spec

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except json.JSONDecodeError as err:
        fail(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}")
    try:
        return data, validate_spec(data)
    except SpecError as err:
        fail(f"{path}: invalid campaign spec: {err}")


def make_evaluator(kind: str, settings, workers: int | None):
    """The evaluator ``layerforge run`` uses: Ray (default), in-process, or simulated."""
    from layerforge.search.evaluators import LocalEvaluator, RayEvaluator, SimulatedEvaluator

    if kind == "local":
        return LocalEvaluator()
    if kind == "simulated":
        return SimulatedEvaluator()
    if kind == "ray":
        return RayEvaluator(
            num_actors=workers or settings.workers,
            num_cpus=settings.worker_cpus,
            num_gpus=settings.worker_gpus,
            task_timeout_s=settings.task_timeout_s,
            ray_address=settings.ray_address,
        )
    fail(f"--evaluator must be ray, local or simulated, not {kind!r}")


def print_front(database_url: str, campaign_id: int) -> None:
    """Print the campaign's Pareto front as a table on stdout."""
    from layerforge.api.cli_client import pareto_table
    from layerforge.search.campaign import pareto_of_campaign

    Console(width=200).print(
        pareto_table(pareto_of_campaign(database_url, campaign_id), campaign_id)
    )


def run(
    spec_file: Path = typer.Argument(..., help="Campaign spec (JSON)."),
    db: str = typer.Option(None, "--db", help="Database URL (default LAYERFORGE_DATABASE_URL)."),
    evaluator: str = typer.Option(
        "ray", help="ray (local Ray or RAY_ADDRESS), local or simulated."
    ),
    workers: int = typer.Option(None, help="Ray evaluator actors (default LAYERFORGE_WORKERS)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Run a campaign locally (resuming it if it was interrupted) and print its Pareto front."""
    from layerforge.search.campaign import CampaignRunner, create_campaign
    from layerforge.storage import StorageError, upgrade_database

    settings = settings_or_exit(database_url=db)
    data, spec = load_spec_file(spec_file)
    key = "run:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
    try:
        upgrade_database(settings.database_url)
        campaign_id = create_campaign(settings.database_url, spec, idempotency_key=key)
    except StorageError as err:
        fail(str(err))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    engine = make_evaluator(evaluator, settings, workers)
    console.print(
        f"campaign {campaign_id} ({spec.name}): {spec.space.kind} space, "
        f"{spec.strategy.name}, budget {spec.budget.max_candidates} candidates"
    )
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("candidates", total=spec.budget.max_candidates, detail="")

        def show(progress) -> None:
            rejected = ", ".join(f"{k} {v}" for k, v in sorted(progress.funnel.items())) or "none"
            best = ", ".join(f"{k.split(':')[-1]} {v:.3f}" for k, v in progress.best.items())
            bar.update(
                task,
                completed=progress.candidates,
                detail=(
                    f"done {progress.counts.get('completed', 0)} | rejected: {rejected} | "
                    f"best: {best or '-'} | HV {progress.hypervolume:.4f}"
                ),
            )

        from layerforge.api.app import mlflow_observer

        observer = mlflow_observer(settings)

        def report(progress) -> None:
            show(progress)
            if observer is not None:
                observer.on_progress(progress)

        runner = CampaignRunner(
            settings.database_url, campaign_id, engine, stop=stop, on_progress=report
        )
        try:
            status = runner.run()
        finally:
            if observer is not None:
                observer.close()
            engine.shutdown()
            from layerforge.workers import ray_session

            ray_session.shutdown()
    console.print(f"campaign {campaign_id}: {status}")
    print_front(settings.database_url, campaign_id)
    if status == "stopped":
        raise typer.Exit(130)
    if status not in ("completed", "paused", "cancelled"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the main CLI."""
    app.command("run")(run)
