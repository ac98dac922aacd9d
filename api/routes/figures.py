"""Downloads for papers: a campaign's Pareto front and hypervolume history as CSV, SVG or PNG.

CSV needs nothing but the standard library; SVG and PNG are drawn with matplotlib when the
server has it (``pip install 'layerforge[plots]'``; the dashboard draws its own PNG / SVG
in the browser either way). Hypervolumes come raw and normalized to the reference box
(:func:`api.routes.common.hypervolume_box`), whose corners the figures' captions state.
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from layerforge.api.deps import SessionDep, SettingsDep
from layerforge.api.errors import ApiError, responses
from layerforge.api.routes.campaigns import CampaignId, pareto_answer
from layerforge.api.routes.common import describe_box, finite, hypervolume_box, normalized
from layerforge.storage import CandidateStatus
from layerforge.storage import repository as repo

router = APIRouter(tags=["campaigns"])

DownloadFormat = Literal["csv", "svg", "png"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "svg": "image/svg+xml", "png": "image/png"}


# ---------------------------------------------------------------- data


def _pareto_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [*data["front"], *data["dominated"]]


def _require_completed(session: Session, campaign_id: int) -> Any:
    campaign = repo.get_campaign(session, campaign_id=campaign_id)
    counts = repo.count_candidates(session, campaign_id=campaign_id)
    if not counts.get(CandidateStatus.COMPLETED):
        raise ApiError(
            409,
            f"campaign {campaign_id} has no completed candidate yet (it is "
            f"{campaign.status!r}, candidates: {dict(counts) or 'none'}): there is no front "
            "or hypervolume to download until one completes",
            "nothing_to_download",
        )
    return campaign


def _axes(
    objectives: list[dict[str, Any]], x: str | None, y: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [o["name"] for o in objectives]
    by_name = {o["name"]: o for o in objectives}
    for field, value in (("x", x), ("y", y)):
        if value is not None and value not in by_name:
            raise ApiError(
                422,
                f"query.{field}: {value!r} is not an objective of this campaign "
                f"(one of: {', '.join(names)})",
            )
    if len(objectives) < 2 and (x is None or y is None):
        only = objectives[0]
        return by_name.get(x or "", only), by_name.get(y or "", only)
    x_obj = by_name[x] if x else objectives[1] if len(objectives) > 1 else objectives[0]
    y_obj = by_name[y] if y else objectives[0]
    return x_obj, y_obj


def front_2d(
    points: list[tuple[float, float]], x_max: bool, y_max: bool
) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (directions given), sorted by x."""
    sign_x = -1.0 if x_max else 1.0
    sign_y = -1.0 if y_max else 1.0
    ordered = sorted(points, key=lambda p: (sign_x * p[0], sign_y * p[1]))
    front: list[tuple[float, float]] = []
    best = math.inf
    for px, py in ordered:
        if sign_y * py < best:
            front.append((px, py))
            best = sign_y * py
    return sorted(front)


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- drawing


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ApiError(
            501,
            "SVG and PNG downloads are drawn with matplotlib, which is not installed on this "
            "server (pip install 'layerforge[plots]'); format=csv works without it, and the "
            "dashboard draws PNG / SVG in the browser",
            "not_installed",
        ) from None
    return plt


def _figure_bytes(figure: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    # no creation date in the file: the same campaign gives the same bytes
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.hashsalt": "layerforge"}):  # stable ids inside the SVG
        figure.savefig(buffer, format=fmt, dpi=200, bbox_inches="tight", metadata=metadata)

    plt.close(figure)
    return buffer.getvalue()


def _draw_pareto(
    data: dict[str, Any],
    x_obj: dict[str, Any],
    y_obj: dict[str, Any],
    title: str,
    caption: str,
    log_x: bool,
    log_y: bool,
    fmt: str,
) -> bytes:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.6))
    xn, yn = x_obj["name"], y_obj["name"]

    def pairs(points):
        out = []
        for p in points:
            vx, vy = p["values"].get(xn), p["values"].get(yn)
            if vx is not None and vy is not None:
                out.append((vx, vy))
        return out

    rows = _pareto_rows(data)
    baseline = [p for p in rows if p.get("origin") == "baseline"]
    others = [p for p in rows if p.get("origin") != "baseline"]
    every = pairs(rows)
    front = front_2d(every, x_obj["maximize"], y_obj["maximize"])
    on_front = set(front)
    dominated = [p for p in pairs(others) if p not in on_front]
    best = [p for p in pairs(others) if p in on_front]
    if dominated:
        axes.scatter(*zip(*dominated), s=18, color="#b8bcc6", label="dominated", zorder=2)
    if front:
        where = "post" if not x_obj["maximize"] else "pre"
        axes.step(*zip(*front), where=where, color="#2f6fdf", lw=1.4, label="front", zorder=3)
    if best:
        axes.scatter(*zip(*best), s=30, color="#2f6fdf", zorder=4)
    if pairs(baseline):
        axes.scatter(
            *zip(*pairs(baseline)),
            s=140,
            marker="*",
            color="#d9480f",
            label="baseline",
            zorder=5,
        )
    axes.set_xlabel(xn + (" (higher is better)" if x_obj["maximize"] else " (lower is better)"))
    axes.set_ylabel(yn + (" (higher is better)" if y_obj["maximize"] else " (lower is better)"))
    if log_x:
        axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    # beside the axes, clear of the points, the axis titles and the title
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    figure.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    return _figure_bytes(figure, fmt)


def _draw_history(
    points: list[dict[str, Any]], title: str, caption: str, fmt: str, normalize: bool
) -> bytes:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    key = "hypervolume_normalized" if normalize else "hypervolume"
    xs = [p["evaluations"] for p in points if p[key] is not None]
    ys = [p[key] for p in points if p[key] is not None]
    axes.plot(xs, ys, color="#2f6fdf", lw=1.6)
    axes.set_xlabel("evaluations")
    axes.set_ylabel("hypervolume (fraction of the reference box)" if normalize else "hypervolume")
    if normalize:
        axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    figure.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    return _figure_bytes(figure, fmt)


def _download(body: bytes | str, fmt: str, stem: str) -> Response:
    filename = (re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:100] or "campaign") + "." + fmt
    return Response(
        body,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


_DOWNLOAD_RESPONSES = {
    **responses(404, 409, 422),
    501: {"description": "SVG / PNG asked of a server without matplotlib"},
    200: {
        "description": "The file, as a download (Content-Disposition: attachment)",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "image/svg+xml": {"schema": {"type": "string"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


# ---------------------------------------------------------------- routes


@router.get(
    "/campaigns/{campaign_id}/pareto/download",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)
def download_pareto(
    campaign_id: CampaignId,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[DownloadFormat, Query(description="csv, svg or png")] = "csv",
    x: Annotated[str | None, Query(max_length=200, description="objective on x")] = None,
    y: Annotated[str | None, Query(max_length=200, description="objective on y")] = None,
    log_x: Annotated[bool, Query(description="log-scale x (for costs)")] = False,
    log_y: Annotated[bool, Query(description="log-scale y (for costs)")] = False,
) -> Response:
    """The Pareto front and the dominated points: CSV (one row per evaluated candidate,
    every objective) or a figure of two objectives (default: the first accuracy against the
    second objective) with the 2-D front as a staircase and the baseline marked; 409 while
    the campaign has no completed candidate."""
    campaign = _require_completed(session, campaign_id)
    data = pareto_answer(settings.database_url, campaign_id)
    objectives = data["objectives"]
    stem = f"{campaign.name}_{campaign_id}_pareto"
    if format == "csv":
        names = [o["name"] for o in objectives]
        table: list[list[Any]] = [["candidate_id", "text", "origin", "on_front", *names]]
        for p in sorted(_pareto_rows(data), key=lambda p: p["candidate_id"]):
            table.append(
                [
                    p["candidate_id"],
                    p["text"],
                    p["origin"],
                    int(bool(p["on_front"])),
                    *["" if p["values"].get(n) is None else repr(p["values"][n]) for n in names],
                ]
            )
        return _download(_csv(table), "csv", stem)
    x_obj, y_obj = _axes(objectives, x, y)
    box = hypervolume_box(objectives, data.get("reference_point"))
    title = f"{campaign.name} (campaign {campaign_id}): Pareto front"
    caption = "Hypervolume box: " + describe_box(box)
    figure = _draw_pareto(data, x_obj, y_obj, title, caption, log_x, log_y, format)
    return _download(figure, format, stem)


def hypervolume_points(session: Session, campaign: Any) -> tuple[list[dict], dict | None]:
    """The campaign's hypervolume history with each point also normalized, and its box."""
    objectives = [
        {"name": str(o.get("name")), "maximize": bool(o.get("maximize"))}
        for o in campaign.objectives or []
    ]
    box = hypervolume_box(objectives, campaign.reference_point)
    points = [
        {
            "evaluations": p.evaluations,
            "hypervolume": finite(p.hypervolume),
            "hypervolume_normalized": normalized(finite(p.hypervolume), box),
            "elapsed_seconds": float(p.elapsed_seconds or 0.0),
        }
        for p in repo.list_hypervolume(session, campaign_id=campaign.id)
    ]
    return points, box


@router.get(
    "/campaigns/{campaign_id}/hypervolume/download",
    response_class=Response,
    responses=_DOWNLOAD_RESPONSES,
)
def download_hypervolume(
    campaign_id: CampaignId,
    session: SessionDep,
    format: Annotated[DownloadFormat, Query(description="csv, svg or png")] = "csv",
    normalize: Annotated[
        bool, Query(description="plot the fraction of the reference box (csv has both)")
    ] = True,
) -> Response:
    """The hypervolume after each evaluation, raw and as a fraction of the reference box: CSV
    or a figure whose caption states the reference point; 409 while the campaign has no
    completed candidate."""
    campaign = _require_completed(session, campaign_id)
    points, box = hypervolume_points(session, campaign)
    stem = f"{campaign.name}_{campaign_id}_hypervolume"
    if format == "csv":
        table: list[list[Any]] = [
            ["evaluations", "hypervolume", "hypervolume_normalized", "elapsed_seconds"]
        ]
        for p in points:
            table.append(
                [
                    p["evaluations"],
                    "" if p["hypervolume"] is None else repr(p["hypervolume"]),
                    ""
                    if p["hypervolume_normalized"] is None
                    else repr(p["hypervolume_normalized"]),
                    repr(p["elapsed_seconds"]),
                ]
            )
        return _download(_csv(table), "csv", stem)
    title = f"{campaign.name} (campaign {campaign_id}): hypervolume"
    caption = "Normalized to the box between the " + describe_box(box)
    return _download(_draw_history(points, title, caption, format, normalize), format, stem)
