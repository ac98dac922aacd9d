"""Confirming winners: the transfer stage's held-out runs, judged against the baseline.

A candidate is labelled ``beats_baseline`` only when, on **every** held-out proxy run (each
transfer proxy at each learning-rate factor), its mean accuracy over seeds exceeds the
baseline's by more than :data:`MARGIN_SDS` pooled seed standard deviations, with at least
:data:`MIN_SEEDS` seeds on both sides. Ranking by a mean alone would call seed noise a
discovery. The controls (``2 * relu`` and ``3 * relu`` trained raw, without gain
normalization) show on the same proxies what output scale alone would do.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CONTROL_PREFIX",
    "CONTROLS",
    "MARGIN_SDS",
    "MIN_SEEDS",
    "held_out_runs",
    "judge",
    "proxy_stats",
    "run_name",
    "scored",
]

MARGIN_SDS = 2.0
MIN_SEEDS = 3
CONTROLS = ("2 * max(x, 0)", "3 * max(x, 0)")
CONTROL_PREFIX = "control:"


def held_out_runs(
    proxies: Sequence[dict[str, Any]], lr_factors: Sequence[float]
) -> list[dict[str, Any]]:
    """Every held-out proxy at every learning-rate factor (factor-major: the proxies as set
    first), the list a transfer job trains on."""
    return [
        {**p, "lr": float(p.get("lr", 0.1)) * float(f)} if f != 1.0 else dict(p)
        for f in lr_factors
        for p in proxies
    ]


def run_name(proxy: dict[str, Any]) -> str:
    """``arch/dataset@lr`` of one held-out run."""
    return f"{proxy['arch']}/{proxy['dataset']}@lr={float(proxy.get('lr', 0.1)):g}"


def scored(accuracies: Sequence[float | None], count: int) -> list[float]:
    """One transfer run's accuracies on the ``count`` held-out runs, a missing or non-finite
    one (the run diverged or stopped before that proxy) as 0."""
    out = []
    for index in range(count):
        value = accuracies[index] if index < len(accuracies) else None
        out.append(float(value) if value is not None and math.isfinite(value) else 0.0)
    return out


def proxy_stats(
    runs: Sequence[Sequence[float | None]] | Sequence[Sequence[float]], count: int
) -> list[dict[str, Any]]:
    """Per held-out run: mean, SD and values over seeds (``runs``: one accuracy list per
    seed, one entry per held-out run; a missing accuracy is skipped)."""
    out = []
    for index in range(count):
        values = [float(v) for r in runs if index < len(r) and (v := r[index]) is not None]
        out.append(
            {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "values": values,
            }
        )
    return out


def judge(candidate: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"beats_baseline", "margins", "reason"}``: ``margins`` are (mean gap) / (pooled SD)
    per held-out run; ``beats_baseline`` is None when there are too few seeds to tell."""
    margins: list[float | None] = []
    for mine, theirs in zip(candidate, baseline, strict=True):
        if len(mine["values"]) < MIN_SEEDS or len(theirs["values"]) < MIN_SEEDS:
            return {
                "beats_baseline": None,
                "margins": [],
                "reason": f"fewer than {MIN_SEEDS} seeds on a held-out run",
            }
        pooled = math.sqrt((mine["sd"] ** 2 + theirs["sd"] ** 2) / 2)
        gap = mine["mean"] - theirs["mean"]
        margins.append(gap / pooled if pooled > 0 else (math.inf if gap > 0 else -math.inf))
    beats = all(m is not None and m > MARGIN_SDS for m in margins)
    shown = [None if m is None or not math.isfinite(m) else m for m in margins]
    if beats:
        reason = f"beats the baseline by > {MARGIN_SDS:g} pooled SDs on every held-out run"
    else:
        reason = f"not > {MARGIN_SDS:g} pooled SDs above the baseline on every held-out run"
    return {"beats_baseline": beats, "margins": shown, "reason": reason}
