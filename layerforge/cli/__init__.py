"""The ``layerforge`` command line: the service, campaigns run here, layers, and a client.

One module per command group, each with a ``register(app)`` that adds its commands:

* :mod:`layerforge.cli.service` — ``serve``, ``controller``, ``db upgrade``
* :mod:`layerforge.cli.local` — ``run`` (a campaign in this process), ``spec-schema``
* :mod:`layerforge.cli.layers` — ``ops``, ``builtins``, ``show``, ``export``
* :mod:`layerforge.cli.remote` — ``submit``, ``list``, ``status``, ``watch``, ``pareto``,
  ``candidates``, ``pause``, ``resume``, ``cancel``, ``delete``, ``download pareto`` and
  ``download hypervolume`` (on :class:`layerforge.Client`)
* :mod:`layerforge.cli.optuna` — ``export-optuna`` (a campaign into an Optuna storage)

A new command group is a module with ``register(app)``, added to :data:`COMMAND_GROUPS`.
Options left unset fall back to their ``LAYERFORGE_*`` settings; usage errors exit 2.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from layerforge.cli import layers, local, optuna, remote, service
from layerforge.cli.common import FAILED, USAGE

COMMAND_GROUPS = (service, local, layers, remote, optuna)


class LayerforgeTyper(typer.Typer):
    """A typer app whose usage errors are one plain ``error: ...`` line on stderr, like
    every other error of the CLI (typer draws them in a box, wrapped at 80 columns), with
    click's exit code (2) and its "did you mean" hints."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().__call__(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            return super().__call__(*args, **kwargs)
        except typer.TyperException as err:  # typer's (vendored) click usage errors
            where = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError":
                sys.exit(err.exit_code)  # a group given no command: its help is printed
            hint = f" (see '{where.command_path} --help')" if where is not None else ""
            typer.echo(f"error: {err.format_message()}{hint}", err=True)
            sys.exit(getattr(err, "exit_code", USAGE))
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(FAILED)


app = LayerforgeTyper(
    name="layerforge",
    help="Discover activation functions and normalization-activation layers by evolution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)


def _version_callback(value: bool) -> None:
    if value:
        from layerforge.api import layerforge_version

        typer.echo(f"layerforge {layerforge_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """layerforge: evolutionary search for activation and normalization-activation layers."""


for _group in COMMAND_GROUPS:
    _group.register(app)

__all__ = ["COMMAND_GROUPS", "LayerforgeTyper", "app"]
