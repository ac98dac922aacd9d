"""Grammar commands of the ``layerforge`` CLI: ``ops``, ``show``, ``export``.

``register(app)`` adds the commands to the main typer app (the lead wires it into
``api/cli.py``).  Errors print one line to stderr and exit with code 2 (no traceback).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

_SPACES = ("activation", "normact")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


def _check_space(space: str) -> str:
    if space not in _SPACES:
        _fail(f"unknown space {space!r}; expected one of {', '.join(_SPACES)}")
    return space


def ops_command() -> None:
    """List the grammar's ops with their arity and the spaces they may appear in."""
    from layerforge import grammar

    table = Table(title="layerforge ops")
    table.add_column("op")
    table.add_column("arity", justify="right")
    table.add_column("spaces")
    table.add_column("meaning")
    for op in grammar.list_ops():
        table.add_row(
            op.name, str(op.arity), ", ".join(k for k in _SPACES if k in op.kinds), op.description
        )
    Console(width=120).print(table)


def show_command(
    expr: str = typer.Option(..., "--expr", help="expression, e.g. 'x * sigmoid(x)'"),
    space: str = typer.Option("activation", "--space", help="activation or normact"),
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
        _fail(str(exc))
        return
    typer.echo(f"space: {space}")
    typer.echo(f"text: {text}")
    typer.echo(f"latex: {latex}")
    typer.echo(f"nodes: {g.num_nodes}  depth: {g.depth}  params: {', '.join(g.params) or '-'}")
    typer.echo(f"key: {g.key}")
    typer.echo(f"fingerprint: {fp}")


def export_command(
    expr: str | None = typer.Option(None, "--expr", help="expression to export"),
    builtin: str | None = typer.Option(None, "--builtin", help="built-in name, e.g. evonorm_b0"),
    space: str | None = typer.Option(None, "--space", help="activation or normact"),
    fmt: str = typer.Option(..., "--format", help="pytorch, numpy, jax, latex, sympy or json"),
    name: str | None = typer.Option(None, "--name", help="class / function name"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write to this file"),
) -> None:
    """Export an expression or a built-in as code (stdout, or a file with -o)."""
    from layerforge import grammar
    from layerforge.grammar import GrammarError

    if (expr is None) == (builtin is None):
        _fail("give exactly one of --expr or --builtin")
    try:
        if builtin is not None:
            g = grammar.get_builtin(builtin)
            if space is not None and _check_space(space) != g.space:
                _fail(
                    f"built-in {builtin!r} is {'an' if g.space == 'activation' else 'a'} {g.space} layer, not {space}"
                )
            if name is None and fmt == "pytorch":
                name = grammar.builtins.CLASS_NAMES.get(builtin) or "".join(
                    p.title() for p in builtin.split("_")
                )
        else:
            if space is None:
                _fail("--space is required with --expr (activation or normact)")
            g = grammar.parse(expr, _check_space(space))  # type: ignore[arg-type]
        text = grammar.export(g, fmt, name)
    except GrammarError as exc:
        _fail(str(exc))
        return
    if output is not None:
        try:
            output.write_text(text)
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror or exc}")
        typer.echo(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    """Add the ``ops``, ``show`` and ``export`` commands to ``app``."""
    app.command("ops")(ops_command)
    app.command("show")(show_command)
    app.command("export")(export_command)
