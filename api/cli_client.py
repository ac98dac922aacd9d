"""CLI client of a running layerforge service: submit, status, watch, pareto, export.

Every command takes ``--server`` (default ``http://127.0.0.1:8000``, env ``LAYERFORGE_SERVER``)
and ``--token`` (env ``LAYERFORGE_API_TOKEN``). Errors print the server's message and exit 2.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from layerforge.api.cli import fail

API = "/api/v1"
FINISHED = ("completed", "cancelled", "failed")
console = Console(stderr=True)

ServerOption = typer.Option(
    "http://127.0.0.1:8000",
    "--server",
    envvar="LAYERFORGE_SERVER",
    help="Base URL of the layerforge service.",
)
TokenOption = typer.Option(
    None, "--token", envvar="LAYERFORGE_API_TOKEN", help="Bearer token for mutating calls."
)


class Client:
    """A thin httpx wrapper that turns every failure into ``fail(<server's message>)``."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.HTTPError as err:
            fail(f"cannot reach {self.server}: {err}")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300] or response.reason_phrase
            fail(f"{response.status_code}: {message}")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()


def submit(
    spec_file: Path = typer.Argument(..., help="Campaign spec (JSON)."),
    idempotency_key: str = typer.Option(None, help="Reuse to make a retried submit safe."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Submit a campaign spec; prints the new campaign's id."""
    try:
        spec = json.loads(spec_file.read_text())
    except FileNotFoundError:
        fail(f"{spec_file}: no such file")
    except json.JSONDecodeError as err:
        fail(f"{spec_file}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}")
    client = Client(server, token)
    key = idempotency_key or str(uuid.uuid4())
    body = client.request("POST", "/campaigns", json=spec, headers={"Idempotency-Key": key}).json()
    console.print(
        f"campaign {body['id']} ({body['name']}) is {body['status']}; "
        f"watch it with: layerforge watch {body['id']}"
    )
    typer.echo(body["id"])


def status(
    campaign_id: int = typer.Argument(..., help="Campaign id."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Print a campaign's status, counts, best values and estimate."""
    body = Client(server, token).get(f"/campaigns/{campaign_id}")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"campaign {body['id']}: {body['name']}", show_header=False)
    table.add_row("status", body["status"])
    table.add_row("candidates", f"{body['progress']['candidates']} / {body['progress']['budget']}")
    table.add_row("counts", ", ".join(f"{k} {v}" for k, v in body["counts"].items() if v))
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
    Console().print(table)


def _sse(client: Client, campaign_id: int, after: int):
    """Yield (id, kind, payload) from the event stream; returns when the stream closes."""
    kind, data, event_id = None, [], None
    with client.http.stream(
        "GET",
        f"{API}/campaigns/{campaign_id}/events",
        params={"after": after},
        timeout=httpx.Timeout(30.0, read=60.0),
    ) as r:
        if r.status_code >= 400:
            r.read()
            client.request("GET", f"/campaigns/{campaign_id}")  # fails with the message
        for line in r.iter_lines():
            if line == "":
                if kind is not None:
                    yield event_id, kind, json.loads("\n".join(data) or "{}")
                kind, data, event_id = None, [], None
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = int(value)


def watch(
    campaign_id: int = typer.Argument(..., help="Campaign id."),
    poll: bool = typer.Option(False, help="Poll instead of following the event stream."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Follow a campaign with a live progress bar until it finishes."""
    client = Client(server, token)
    body = client.get(f"/campaigns/{campaign_id}")
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(
            f"campaign {campaign_id}",
            total=body["progress"]["budget"],
            completed=body["progress"]["candidates"],
            info=body["status"],
        )

        def show(detail: dict) -> None:
            best = ", ".join(
                f"{k.split(':')[-1]} {v:.3f}" for k, v in detail["best"].items() if v is not None
            )
            progress.update(
                task, completed=detail["progress"]["candidates"], info=f"{detail['status']}  {best}"
            )

        show(body)
        last = 0
        while body["status"] not in FINISHED:
            if poll:
                time.sleep(1.0)
            else:
                try:
                    for event_id, kind, payload in _sse(client, campaign_id, last):
                        last = event_id or last
                        if kind == "progress":
                            progress.update(
                                task,
                                completed=payload.get("candidates", 0),
                                info=f"{payload.get('status', '')} in flight "
                                f"{payload.get('in_flight', 0)}",
                            )
                        elif kind in ("status", "end"):
                            break
                except httpx.HTTPError:
                    time.sleep(1.0)  # the stream dropped: reconnect after the last event
            body = client.get(f"/campaigns/{campaign_id}")
            show(body)
    console.print(f"campaign {campaign_id} {body['status']}")
    if body["status"] == "failed":
        raise typer.Exit(1)


def pareto(
    campaign_id: int = typer.Argument(..., help="Campaign id."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Print the campaign's Pareto front as a table."""
    data = Client(server, token).get(f"/campaigns/{campaign_id}/pareto")
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
            *("–" if v is None else f"{v:.4f}" for v in values),
        )
    return table


def export(
    candidate_id: int = typer.Argument(None, help="Candidate id (on the server)."),
    format: str = typer.Option(
        "pytorch", "--format", "-f", help="pytorch, numpy, jax, latex, sympy or json."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
    expr: str = typer.Option(None, "--expr", help="Export this expression instead (offline)."),
    builtin: str = typer.Option(None, "--builtin", help="Export this built-in instead (offline)."),
    space: str = typer.Option(None, "--space", help="activation or normact (with --expr)."),
    name: str = typer.Option(None, "--name", help="Class / function name (with --expr/--builtin)."),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Download a candidate as code (or, with --expr/--builtin, export one offline)."""
    if expr is not None or builtin is not None:
        if candidate_id is not None:
            fail("give a CANDIDATE_ID or --expr/--builtin, not both")
        from layerforge.api.cli_grammar import export_command

        export_command(
            expr=expr, builtin=builtin, space=space, fmt=format, name=name, output=output
        )
        return
    if candidate_id is None:
        fail("give a CANDIDATE_ID (or --expr / --builtin to export offline)")
    response = Client(server, token).request(
        "GET", f"/candidates/{candidate_id}/export", params={"format": format}
    )
    warning = response.headers.get("x-layerforge-warning")
    if warning:  # on stderr, so that stdout stays the file
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    if output is None:
        typer.echo(response.text, nl=False)
        return
    try:
        output.write_text(response.text)
    except OSError as err:
        fail(f"cannot write {output}: {err}")
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``layerforge`` CLI.

    ``export`` replaces the grammar's offline ``export`` command (same name): with
    ``--expr``/``--builtin`` it delegates to it, with a CANDIDATE_ID it downloads from the server.
    """
    names = {"submit", "status", "watch", "pareto", "export"}
    app.registered_commands[:] = [
        c
        for c in app.registered_commands
        if (c.name or getattr(c.callback, "__name__", "").removesuffix("_command")) not in names
    ]
    for command in (submit, status, watch, pareto, export):
        app.command()(command)
