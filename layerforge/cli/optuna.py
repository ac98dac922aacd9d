"""``layerforge export-optuna``: a campaign as a multi-objective Optuna study.

The service sends the campaign's evaluated candidates (``GET /campaigns/{id}/optuna``) and
this command writes them into the Optuna storage ``--storage`` names, where
``optuna.load_study``, ``optuna.visualization`` and optuna-dashboard read them.
"""

from __future__ import annotations

import typer

from layerforge.cli.common import fail
from layerforge.cli.remote import CampaignArgument, ServerOption, TokenOption, connect


def export_optuna(
    campaign_id: int = CampaignArgument,
    storage: str = typer.Option(
        ...,
        "--storage",
        help="Optuna storage URL to write into, e.g. sqlite:///studies.db or postgresql://...",
    ),
    study: str = typer.Option(
        None, "--study", help="Study name (default layerforge-campaign-ID); must be new there."
    ),
    server: str = ServerOption,
    token: str = TokenOption,
) -> None:
    """Write a campaign's evaluated candidates into an Optuna storage as a multi-objective
    study: one trial per candidate (params: its text and structure; values: its
    objectives; user attrs: LaTeX, fingerprint, status)."""
    with connect(server, token) as client:
        try:
            name = client.export_optuna(campaign_id, storage, study_name=study)
        except ValueError as err:
            fail(str(err))
    typer.echo(f"campaign {campaign_id} written to {storage} as study {name!r}")


def register(app: typer.Typer) -> None:
    """Add ``export-optuna`` to the CLI."""
    app.command("export-optuna")(export_optuna)
