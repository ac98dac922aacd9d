"""Commands that talk to a running service, built on :class:`layerforge.Client`: ``submit``,
``list``, ``status``, ``watch``, ``pareto``, ``candidates``, ``pause``, ``resume``, ``cancel``,
``delete``, ``download pareto`` / ``download hypervolume`` (and the download half of
``export``).

Every command takes ``--server`` (env ``LAYERFORGE_SERVER``, default
``http://127.0.0.1:8000``; a URL without a scheme gets ``http://``) and ``--token`` (env
``LAYERFORGE_API_TOKEN``). A request the server refuses as wrong (4xx) prints its message and
exits 2; a server that cannot be reached or fails (5xx) exits 1.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from layerforge.cli.common import FAILED, USAGE, fail, stderr
from layerforge.client import FINISHED, Client, Event
from layerforge.errors import (
    ApiError,
    ExportWarning,
    LayerforgeError,
    ServerError,
    ServerUnreachable,
    SpecFileError,
)

ServerOption = typer.Option(
    None,
    "--server",
    envvar="LAYERFORGE_SERVER",
    help="Base URL of the service (default http://127.0.0.1:8000).",
    show_default=False,
)
TokenOption = typer.Option(
    None, "--token", envvar="LAYERFORGE_API_TOKEN", help="Bearer token for mutating calls."
)
CampaignArgument = typer.Argument(..., help="Campaign id.", min=1, metavar="CAMPAIGN_ID")


@contextmanager
def connect(server: str | None, token: str | None) -> Iterator[Client]:
    """A :class:`Client` for the command; every error it raises becomes one line on stderr
    and the exit code of its kind."""
    try:
        client = Client(server, token)
    except ValueError as err:
        fail(str(err))
    try:
        yield client
    except ServerUnreachable as err:
        fail(str(err), FAILED)
    except ServerError as err:
        fail(f"{err.status} from {client.url}: {err.message}", FAILED)
    except ApiError as err:
        fail(f"{err.status}: {err.message}", USAGE)
    except LayerforgeError as err:
        fail(str(err), USAGE)
    finally:
        client.close()


def submit(
    spec_file: Path = typer.Argument(..., help="Campaign spec (JSON or YAML)."),
    idempotency_key: str = typer.Option(None, help="Reuse to make a retried submit safe."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Submit a campaign spec; prints the new campaign's id."""
    from layerforge.specs import read_spec_file

    try:
        spec = read_spec_file(spec_file)
    except SpecFileError as err:
        fail(str(err))
    with connect(server, token) as client:
        body = client.create_campaign(spec, idempotency_key=idempotency_key)
    stderr.print(
        f"campaign {body['id']} ({body['name']}) is {body['status']}; "
        f"watch it with: layerforge watch {body['id']}"
    )
    typer.echo(body["id"])


def list_command(
    status: str = typer.Option(None, "--status", help="Only campaigns in this status."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON items."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """List the server's campaigns, newest first."""
    with connect(server, token) as client:
        items = []
        for item in client.iter_campaigns(status, page_size=min(limit, 500)):
            items.append(item)
            if len(items) >= limit:
                break
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        stderr.print("no campaigns" + (f" with status {status}" if status else ""))
        return
    table = Table(title=f"campaigns on {client.url}")
    for column, justify in (
        ("id", "right"),
        ("name", "left"),
        ("status", "left"),
        ("space", "left"),
        ("strategy", "left"),
        ("candidates", "right"),
        ("created", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]  # the justify values above are rich's JustifyMethod literals
    for item in items:
        progress = item["progress"]
        table.add_row(
            str(item["id"]),
            item["name"],
            item["status"],
            item["space_kind"],
            item["strategy"],
            f"{progress['candidates']} / {progress['budget']}",
            str(item["created_at"])[:19].replace("T", " "),
        )
    Console(width=160).print(table)


def status(
    campaign_id: int = CampaignArgument,
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Print a campaign's status, counts, best values and estimate."""
    with connect(server, token) as client:
        body = client.get_campaign(campaign_id)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"campaign {body['id']}: {body['name']}", show_header=False)
    table.add_row("status", body["status"])
    table.add_row("candidates", f"{body['progress']['candidates']} / {body['progress']['budget']}")
    table.add_row("counts", ", ".join(f"{k} {v}" for k, v in body["counts"].items() if v) or "–")
    for name, value in body["best"].items():
        table.add_row(f"best {name}", "–" if value is None else f"{value:.4f}")
    table.add_row(
        "hypervolume", "–" if body["hypervolume"] is None else f"{body['hypervolume']:.4f}"
    )
    table.add_row("elapsed", f"{body['elapsed_seconds']:.0f} s")
    left = body["estimate"]["remaining_seconds"]
    table.add_row("left (estimate)", "–" if left is None else f"{left:.0f} s")
    if body.get("error"):
        table.add_row("error", body["error"])
    Console(width=160).print(table)


def progress_line(campaign_id: int, data: dict[str, Any]) -> str:
    """One line for a progress event (or a campaign's detail): status, candidates against
    the budget, counts, work in flight, best values, hypervolume, elapsed time."""
    counts = data.get("counts") or {}
    done = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none yet"
    if "progress" in data:  # a campaign detail
        candidates, budget = data["progress"]["candidates"], data["progress"]["budget"]
    else:
        candidates, budget = data.get("candidates", 0), data.get("budget", 0)
    best = ", ".join(
        f"{name.split(':')[-1]} {value:.4f}"
        for name, value in (data.get("best") or {}).items()
        if isinstance(value, (int, float))
    )
    parts = [
        f"campaign {campaign_id} {data.get('status', '?')}",
        f"{candidates}/{budget} candidates ({done})",
    ]
    if "in_flight" in data:
        parts.append(f"{data['in_flight']} in flight")
    if best:
        parts.append(f"best {best}")
    if isinstance(data.get("hypervolume"), (int, float)):
        parts.append(f"HV {data['hypervolume']:.4f}")
    if isinstance(data.get("elapsed_seconds"), (int, float)):
        parts.append(f"{data['elapsed_seconds']:.1f} s")
    return ", ".join(parts)


def watch(
    campaign_id: int = CampaignArgument,
    poll: bool = typer.Option(False, help="Poll every second instead of following events."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Follow a campaign until it finishes (a progress bar, or lines when piped).

    On a terminal: a live progress bar. Otherwise (logs, pipes, CI): one line now, then one
    per progress or status event. Exits 1 when the campaign failed.
    """
    with connect(server, token) as client:
        detail = client.get_campaign(campaign_id)
        if stderr.is_terminal:
            detail = _watch_with_bar(client, campaign_id, detail, poll)
        else:
            detail = _watch_with_lines(client, campaign_id, detail, poll)
    stderr.print(f"campaign {campaign_id} {detail['status']}")
    if detail["status"] == "failed":
        if detail.get("error"):
            stderr.print(f"error: {detail['error']}")
        raise typer.Exit(FAILED)


def _follow(client: Client, campaign_id: int, poll: bool) -> Iterator[Event]:
    """The campaign's events (or, with ``poll``, its detail once a second as ``progress``)
    until it is finished."""
    if not poll:
        yield from client.events(campaign_id)
        return
    while True:
        detail = client.get_campaign(campaign_id)
        yield Event(None, "progress", detail)
        if detail["status"] in FINISHED:
            return
        time.sleep(1.0)


def _watch_with_lines(
    client: Client, campaign_id: int, detail: dict[str, Any], poll: bool
) -> dict[str, Any]:
    """One line now, then one per progress or status event; the events from before the
    first line (the stream starts at the campaign's first event) are not repeated."""
    typer.echo(progress_line(campaign_id, detail))
    if detail["status"] in FINISHED:
        return detail
    replaying = not poll
    for event in _follow(client, campaign_id, poll):
        if replaying:
            if not _after_snapshot(event, detail):
                continue
            replaying = False
        if event.kind == "progress":
            typer.echo(progress_line(campaign_id, event.data))
        elif event.kind == "status":
            change = f"{event.data.get('from')} -> {event.data.get('to')}"
            reason = f" ({event.data['error']})" if event.data.get("error") else ""
            typer.echo(f"campaign {campaign_id} status: {change}{reason}")
        elif event.kind == "resumed":
            typer.echo(
                f"campaign {campaign_id} resumed; "
                f"{event.data.get('requeued', 0)} evaluations re-queued"
            )
    return client.get_campaign(campaign_id)


def _after_snapshot(event: Event, detail: dict[str, Any]) -> bool:
    """Whether ``event`` happened after the campaign ``detail`` was read: a progress event
    with more candidates (or as many, later), a change to another status, the end."""
    if event.kind == "progress":
        candidates = event.data.get("candidates", 0)
        seen = detail["progress"]["candidates"]
        later = event.data.get("elapsed_seconds", 0.0) > detail["elapsed_seconds"]
        return candidates > seen or (candidates == seen and later)
    if event.kind == "status":
        return event.data.get("to") != detail["status"]
    return event.kind == "end"


def _watch_with_bar(
    client: Client, campaign_id: int, detail: dict[str, Any], poll: bool
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task(
            f"campaign {campaign_id}",
            total=detail["progress"]["budget"],
            completed=detail["progress"]["candidates"],
            info=detail["status"],
        )
        if detail["status"] in FINISHED:
            return detail
        for event in _follow(client, campaign_id, poll):
            if event.kind != "progress":
                continue
            data = event.data
            candidates = (
                data["progress"]["candidates"] if "progress" in data else data.get("candidates", 0)
            )
            best = ", ".join(
                f"{k.split(':')[-1]} {v:.3f}"
                for k, v in (data.get("best") or {}).items()
                if isinstance(v, (int, float))
            )
            bar.update(task, completed=candidates, info=f"{data.get('status', '')}  {best}")
        detail = client.get_campaign(campaign_id)
        bar.update(task, completed=detail["progress"]["candidates"], info=detail["status"])
    return detail


def pareto(
    campaign_id: int = CampaignArgument,
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Print the campaign's Pareto front as a table."""
    with connect(server, token) as client:
        data = client.get_pareto(campaign_id)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    Console(width=200).print(pareto_table(data, campaign_id))


def pareto_table(data: dict[str, Any], campaign_id: int) -> Table:
    """A Pareto front (the shape of ``GET /campaigns/{id}/pareto``) as a rich table."""
    table = Table(title=f"Pareto front of campaign {campaign_id}")
    table.add_column("id", justify="right")
    table.add_column("layer")
    table.add_column("origin")
    for objective in data["objectives"]:
        arrow = "↑" if objective["maximize"] else "↓"
        table.add_column(f"{objective['name']} {arrow}", justify="right")
    for point in sorted(data["front"], key=lambda p: p["candidate_id"]):
        values = [point["values"].get(o["name"]) for o in data["objectives"]]
        table.add_row(
            str(point["candidate_id"]),
            point["text"],
            point["origin"],
            *("–" if v is None or v != v else f"{v:.4f}" for v in values),
        )
    return table


def candidates(
    campaign_id: int = CampaignArgument,
    status_filter: str = typer.Option(None, "--status", help="Only candidates in this status."),
    sort: str = typer.Option(None, "--sort", help="Sort by this objective (default: by id)."),
    ascending: bool = typer.Option(False, "--ascending", help="Lowest first (with --sort)."),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="Show at most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON items."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """List a campaign's candidates (ids to export), optionally sorted by an objective."""
    with connect(server, token) as client:
        page = client.list_candidates(
            campaign_id,
            status=status_filter,
            sort=sort,
            order="asc" if ascending else "desc",
            limit=limit,
        )
    items = page["items"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=f"candidates of campaign {campaign_id}")
    names = sorted({name for item in items for name in item["objectives"]})
    for column in ("id", "status", "origin", "layer", *names):
        table.add_column(column, justify="right" if column in ("id", *names) else "left")
    for item in items:
        values = [item["objectives"].get(n) for n in names]
        table.add_row(
            str(item["id"]),
            item["status"],
            item["origin"],
            item["text"],
            *("–" if v is None else f"{v:.4f}" for v in values),
        )
    Console(width=200).print(table)


def _action(name: str):
    def command(
        campaign_id: int = CampaignArgument,
        server: str = ServerOption,
        token: str = TokenOption,
    ) -> None:
        with connect(server, token) as client:
            body = getattr(client, f"{name}_campaign")(campaign_id)
        typer.echo(f"campaign {campaign_id} is {body['status']}")

    command.__name__ = name
    command.__doc__ = {
        "pause": "Pause a queued or running campaign (what is in flight finishes).",
        "resume": "Resume a paused campaign.",
        "cancel": "Cancel a queued, running or paused campaign for good.",
    }[name]
    return command


def delete(
    campaign_id: int = CampaignArgument,
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Delete a finished campaign and everything it holds (cancel a running one first)."""
    with connect(server, token) as client:
        client.delete_campaign(campaign_id)
    typer.echo(f"campaign {campaign_id} deleted")


def download(
    *,
    candidate_id: int | None,
    campaign_id: int | None,
    objective: str | None,
    fmt: str,
    output: Path | None,
    server: str | None,
    token: str | None,
) -> None:
    """Download a candidate (or the best completed one of a campaign) as code."""
    from layerforge.cli.layers import write_or_print

    with connect(server, token) as client:
        if candidate_id is None:
            assert campaign_id is not None
            best = client.best_candidate(campaign_id, objective)
            candidate_id = int(best["id"])
            stderr.print(f"campaign {campaign_id}: best candidate {candidate_id}: {best['text']}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExportWarning)
            text = client.export_candidate(candidate_id, fmt)
    for warning in caught:  # on stderr, so that stdout stays the file
        stderr.print(f"[bold yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    write_or_print(text, output)


download_app = typer.Typer(
    help="Download a campaign's Pareto front or hypervolume history (CSV, SVG or PNG).",
    no_args_is_help=True,
)
OutputOption = typer.Option(
    None,
    "--output",
    "-o",
    help="File or folder to write (default: the server's file name here; - for stdout).",
)


def _save(content: bytes, output: Path | None, default_name: str) -> None:
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    target = output or Path(default_name)
    if target.is_dir():
        target = target / default_name
    try:
        target.write_bytes(content)
    except OSError as err:
        fail(f"cannot write {target}: {err.strerror or err}")
    stderr.print(f"wrote {target}")


@download_app.command("pareto")
def download_pareto(
    campaign_id: int = CampaignArgument,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, svg or png."),
    x: str = typer.Option(None, "--x", help="Objective on the x axis (figures)."),
    y: str = typer.Option(None, "--y", help="Objective on the y axis (figures)."),
    log_x: bool = typer.Option(False, "--log-x", help="Log-scale x (for costs)."),
    log_y: bool = typer.Option(False, "--log-y", help="Log-scale y (for costs)."),
    output: Path = OutputOption,
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """The Pareto front and the dominated points: CSV, or a figure of two objectives."""
    with connect(server, token) as client:
        content = client.download_pareto(campaign_id, fmt, x=x, y=y, log_x=log_x, log_y=log_y)
    _save(content, output, f"campaign_{campaign_id}_pareto.{fmt}")


@download_app.command("hypervolume")
def download_hypervolume(
    campaign_id: int = CampaignArgument,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, svg or png."),
    raw: bool = typer.Option(False, "--raw", help="Plot the raw hypervolume, not the fraction."),
    output: Path = OutputOption,
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """The hypervolume after each evaluation (raw and as a fraction of the reference box)."""
    with connect(server, token) as client:
        content = client.download_hypervolume(campaign_id, fmt, normalize=not raw)
    _save(content, output, f"campaign_{campaign_id}_hypervolume.{fmt}")


def register(app: typer.Typer) -> None:
    """Add the client commands to the CLI."""
    app.command()(submit)
    app.command("list")(list_command)
    app.command()(status)
    app.command()(watch)
    app.command()(pareto)
    app.command()(candidates)
    for name in ("pause", "resume", "cancel"):
        app.command(name)(_action(name))
    app.command()(delete)
    app.add_typer(download_app, name="download")
