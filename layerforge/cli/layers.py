"""Layer commands: ``ops``, ``builtins``, ``show`` and ``export``, offline, from the grammar.

``export`` also downloads a candidate from a server (``export CANDIDATE_ID`` or ``export
--campaign ID``): one command for a layer as code, wherever the layer lives.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from layerforge.cli.common import fail, stderr

SPACES = ("activation", "normact")


def _check_space(space: str) -> str:
    if space not in SPACES:
        fail(f"unknown space {space!r}; expected one of {', '.join(SPACES)}")
    return space


def ops_command(
    space: str = typer.Option(None, "--space", help="Only the ops of this space."),
) -> None:
    """List the grammar's ops with their arity and the spaces they may appear in."""
    from layerforge import grammar

    table = Table(title="layerforge ops")
    table.add_column("op")
    table.add_column("arity", justify="right")
    table.add_column("spaces")
    table.add_column("meaning")
    for op in grammar.list_ops(_check_space(space) if space else None):
        table.add_row(
            op.name, str(op.arity), ", ".join(k for k in SPACES if k in op.kinds), op.description
        )
    Console(width=120).print(table)


def builtins_command(
    space: str = typer.Option(None, "--space", help="Only the built-ins of this space."),
) -> None:
    """List the built-in layers (usable as campaign seeds and with export --builtin)."""
    from layerforge import grammar

    table = Table(title="layerforge built-ins")
    table.add_column("name")
    table.add_column("space")
    table.add_column("definition")
    for name in grammar.list_builtins(_check_space(space) if space else None):
        graph = grammar.get_builtin(name)
        table.add_row(name, graph.space, grammar.builtins.builtin_text(name))
    Console(width=160).print(table)


def show_command(
    expr: str = typer.Option(..., "--expr", help="Expression, e.g. 'x * sigmoid(x)'."),
    space: str = typer.Option("activation", "--space", help="activation or normact."),
) -> None:
    """Parse an expression and print its canonical text, LaTeX and functional fingerprint."""
    from layerforge import grammar
    from layerforge.grammar import GrammarError

    _check_space(space)
    try:
        g = grammar.parse(expr, space)
        text = grammar.to_text(g)
        latex = grammar.export(g, "latex").rstrip("\n")
        fp = grammar.fingerprint(g)
    except GrammarError as exc:
        fail(str(exc))
    typer.echo(f"space: {space}")
    typer.echo(f"text: {text}")
    typer.echo(f"latex: {latex}")
    typer.echo(f"nodes: {g.num_nodes}  depth: {g.depth}  params: {', '.join(g.params) or '-'}")
    typer.echo(f"key: {g.key}")
    typer.echo(f"fingerprint: {fp}")


def unknown_builtin(name: str) -> str:
    """The message for a built-in name that does not exist, with the closest names."""
    from layerforge.grammar import list_builtins
    from layerforge.grammar.parser import did_you_mean

    names = list_builtins()
    return f"unknown built-in {name!r}{did_you_mean(name, names)}; built-ins: {', '.join(names)}"


def export_offline(
    *,
    expr: str | None,
    builtin: str | None,
    space: str | None,
    fmt: str,
    name: str | None,
    output: Path | None,
) -> None:
    """Export an expression or a built-in as code, to stdout or the file ``output``."""
    from layerforge import grammar
    from layerforge.grammar import GrammarError

    if (expr is None) == (builtin is None):
        fail("give exactly one of --expr or --builtin")
    try:
        if builtin is not None:
            if builtin not in grammar.list_builtins():
                fail(unknown_builtin(builtin))
            g = grammar.get_builtin(builtin)
            if space is not None and _check_space(space) != g.space:
                article = "an" if g.space == "activation" else "a"
                fail(f"built-in {builtin!r} is {article} {g.space} layer, not {space}")
            if name is None and fmt == "pytorch":
                name = grammar.builtins.CLASS_NAMES.get(builtin) or "".join(
                    p.title() for p in builtin.split("_")
                )
        else:
            if space is None:
                fail("--space is required with --expr (activation or normact)")
            g = grammar.parse(expr, _check_space(space))  # type: ignore[arg-type]  # expr is set: exactly one of --expr and --builtin is, checked above
        text = grammar.export(g, fmt, name)
    except GrammarError as exc:
        fail(str(exc))
    write_or_print(text, output)


def write_or_print(text: str, output: Path | None) -> None:
    """``text`` to the file ``output`` (saying so on stderr), or to stdout."""
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    stderr.print(f"wrote {output}")


def export_command(
    candidate_id: int = typer.Argument(
        None, help="Candidate id on the server.", metavar="CANDIDATE_ID"
    ),
    fmt: str = typer.Option(
        "pytorch", "--format", "-f", help="pytorch, numpy, jax, latex, sympy or json."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
    expr: str = typer.Option(None, "--expr", help="Export this expression (offline)."),
    builtin: str = typer.Option(None, "--builtin", help="Export this built-in (offline)."),
    space: str = typer.Option(None, "--space", help="activation or normact (with --expr)."),
    name: str = typer.Option(None, "--name", help="Class / function name (offline)."),
    campaign: int = typer.Option(
        None, "--campaign", help="Download the best completed candidate of this campaign."
    ),
    objective: str = typer.Option(
        None, "--objective", help="With --campaign: best on this objective (default the first)."
    ),
    server: str = typer.Option(None, "--server", envvar="LAYERFORGE_SERVER", help="Service URL."),
    token: str = typer.Option(None, "--token", envvar="LAYERFORGE_API_TOKEN", help="Bearer token."),
) -> None:
    """A layer as code: an expression or built-in (offline), or a server's candidate.

    Offline: --expr (with --space) or --builtin. From a server: CANDIDATE_ID, or --campaign
    ID for the campaign's best completed candidate (on --objective, default the first).
    """
    offline = expr is not None or builtin is not None
    online = candidate_id is not None or campaign is not None
    if offline and online:
        fail(
            "give a CANDIDATE_ID or --campaign (download), or --expr / --builtin (offline), not both"
        )
    if offline:
        export_offline(expr=expr, builtin=builtin, space=space, fmt=fmt, name=name, output=output)
        return
    if not online:
        fail(
            "give a CANDIDATE_ID or --campaign ID to download, or --expr / --builtin to export offline"
        )
    if candidate_id is not None and campaign is not None:
        fail("give a CANDIDATE_ID or --campaign, not both")
    from layerforge.cli.remote import download

    download(
        candidate_id=candidate_id,
        campaign_id=campaign,
        objective=objective,
        fmt=fmt,
        output=output,
        server=server,
        token=token,
    )


def register(app: typer.Typer) -> None:
    """Add ``ops``, ``builtins``, ``show`` and ``export`` to the CLI."""
    app.command("ops")(ops_command)
    app.command("builtins")(builtins_command)
    app.command("show")(show_command)
    app.command("export")(export_command)
