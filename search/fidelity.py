"""Proxy fidelity: can a campaign's proxies tell layers apart, and do they agree with the
held-out ones?

Every campaign trains a fixed panel of built-ins (:data:`PANELS`) on each of its search and
transfer proxies with several seeds while it starts, beside the search. From those runs:

* the **discrimination ratio** of each proxy: the standard deviation of the panel's mean
  accuracies over the median seed standard deviation. Below :data:`MIN_DISCRIMINATION` the
  proxy's differences between layers are of the order of its seed noise: its ranking of
  candidates means little;
* the **rank agreement** between each search proxy and each transfer (held-out) proxy:
  Kendall's tau-b of the panel's means. Below :data:`MIN_TAU` the search proxy ranks layers
  differently from the proxy its winners are confirmed on.

The report is stored as the campaign's ``fidelity`` event, served with the campaign and shown
on the dashboard with a warning saying what to change. Reports are keyed by what determines
them (:func:`report_key`): a campaign whose panel, seeds, proxies and gain mode equal an
earlier campaign's reuses that report instead of training the panel again.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MIN_DISCRIMINATION",
    "MIN_TAU",
    "JOB_PREFIX",
    "NORMACT_PRESET",
    "PANELS",
    "accuracy_of",
    "build_report",
    "discrimination",
    "kendall_tau",
    "panel_jobs",
    "panel_kind",
    "parse_job_id",
    "report_key",
]

PANELS: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "silu", "gelu", "tanh", "elu", "softplus"),
    "normact": ("bn_relu", "gn_relu", "in_relu", "ln_relu", "evonorm_b0", "evonorm_s0"),
}
#: The proxy preset (workers/presets.py) a norm-act campaign is pointed to when its proxies
#: cannot tell the norm-act panel apart: resnet/digits at batch 128 saturates for every
#: built-in, the small-batch preset spreads them (benchmarks/RESULTS.md, B10a).
NORMACT_PRESET = "normact-small-batch"
MIN_DISCRIMINATION = 3.0
MIN_TAU = 0.5
JOB_PREFIX = "fidelity:"
PANEL_STAGES = {"stages": ["static", "full"], "measure_costs": False}


def discrimination(per_function: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``{"panel_spread_sd", "median_seed_sd", "discrimination_ratio"}`` of one proxy's runs
    (``per_function``: name -> accuracies over seeds). A proxy without seed noise (every seed
    scored alike) has an infinite ratio when the panel differs, 0 when it does not."""
    means = [statistics.fmean(v) for v in per_function.values() if v]
    sds = [statistics.stdev(v) for v in per_function.values() if len(v) > 1]
    spread = statistics.stdev(means) if len(means) > 1 else 0.0
    noise = statistics.median(sds) if sds else 0.0
    if noise > 0:
        ratio = spread / noise
    else:
        ratio = math.inf if spread > 0 else 0.0
    return {"panel_spread_sd": spread, "median_seed_sd": noise, "discrimination_ratio": ratio}


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long score lists (ties counted as in tau-b; nan when
    either list is constant)."""
    if len(a) != len(b):
        raise ValueError(f"the lists differ in length: {len(a)} and {len(b)}")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator > 0 else math.nan


def _proxy_name(proxy: dict[str, Any]) -> str:
    return f"{proxy['arch']}/{proxy['dataset']}"


def report_key(
    kind: str,
    panel: Sequence[str],
    seeds: Sequence[int],
    search: Sequence[dict[str, Any]],
    transfer: Sequence[dict[str, Any]],
    gain: str,
) -> str:
    """What determines a report: equal keys, equal training runs (so the report is reused)."""
    text = json.dumps(
        {
            "kind": kind,
            "panel": list(panel),
            "seeds": list(seeds),
            "search": list(search),
            "transfer": list(transfer),
            "gain": gain,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def panel_jobs(
    panel: Sequence[str],
    seeds: Sequence[int],
    proxies: list[dict[str, Any]],
    campaign_id: int,
) -> list[tuple[str, dict[str, Any]]]:
    """``(job id, payload)`` per (built-in, seed): the ordinary payload shape every evaluator
    takes (``proxies`` already carry the campaign's gain mode), trained on every proxy."""
    from layerforge.grammar import get_builtin

    jobs = []
    for name in panel:
        graph = get_builtin(name).to_dict()
        for seed in seeds:
            jobs.append(
                (
                    f"{JOB_PREFIX}{name}:{seed}",
                    {
                        "graph": graph,
                        "proxies": proxies,
                        "rejection": dict(PANEL_STAGES),
                        "seed": int(seed),
                        "kind": "fidelity",
                        "campaign_id": campaign_id,
                    },
                )
            )
    return jobs


def accuracy_of(proxy_result: dict[str, Any]) -> float | None:
    """A proxy result's validation accuracy, None when missing or not finite."""
    value = proxy_result.get("val_accuracy") if isinstance(proxy_result, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_job_id(job_id: str) -> tuple[str, int]:
    """``(built-in name, seed)`` of a panel job id from :func:`panel_jobs`."""
    name, seed = job_id.removeprefix(JOB_PREFIX).rsplit(":", 1)
    return name, int(seed)


def build_report(
    *,
    panel: Sequence[str],
    seeds: Sequence[int],
    search: Sequence[dict[str, Any]],
    transfer: Sequence[dict[str, Any]],
    accuracies: dict[tuple[str, int], list[float | None]],
    key: str,
) -> dict[str, Any]:
    """The fidelity report from the panel's accuracies (``(name, seed)`` -> one accuracy per
    proxy, search proxies first, then transfer; None for a run that did not complete, which
    counts as chance-or-worse: 0)."""
    roles = [("search", p) for p in search] + [("transfer", p) for p in transfer]
    failed = sorted({n for (n, _s), accs in accuracies.items() if any(a is None for a in accs)})
    proxies: list[dict[str, Any]] = []
    for index, (role, proxy) in enumerate(roles):
        per_function = {
            name: [float(accuracies[(name, s)][index] or 0.0) for s in seeds] for name in panel
        }
        proxies.append(
            {
                "name": _proxy_name(proxy),
                "role": role,
                "index": index,
                "per_function": {
                    n: {
                        "mean": statistics.fmean(v),
                        "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                        "values": v,
                    }
                    for n, v in per_function.items()
                },
                **discrimination(per_function),
            }
        )
    agreement = []
    for s in (p for p in proxies if p["role"] == "search"):
        for t in (p for p in proxies if p["role"] == "transfer"):
            tau = kendall_tau(
                [s["per_function"][n]["mean"] for n in panel],
                [t["per_function"][n]["mean"] for n in panel],
            )
            agreement.append({"search": s["name"], "transfer": t["name"], "kendall_tau": tau})
    if not transfer:
        notes = [
            "no held-out (transfer) proxies: rank agreement cannot be checked; add "
            "transfer.proxies to confirm the search proxy's ranking"
        ]
    else:
        notes = []
    return _json_safe(
        {
            "key": key,
            "panel": list(panel),
            "seeds": list(seeds),
            "proxies": proxies,
            "rank_agreement": agreement,
            "failed": failed,
            "warnings": warnings(proxies, agreement, failed, kind=panel_kind(panel)),
            "notes": notes,
            "thresholds": {"discrimination": MIN_DISCRIMINATION, "kendall_tau": MIN_TAU},
        }
    )


def _json_safe(value: Any) -> Any:
    """Non-finite numbers as None (JSON, and PostgreSQL's JSONB, have no inf or nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def panel_kind(panel: Sequence[str]) -> str | None:
    """The space (``activation`` or ``normact``) of a panel's built-ins, None when they mix
    spaces or a name is not a built-in."""
    from layerforge.grammar import GrammarError, get_builtin

    try:
        kinds = {get_builtin(name).space for name in panel}
    except GrammarError:
        return None
    return kinds.pop() if len(kinds) == 1 else None


def warnings(
    proxies: list[dict[str, Any]],
    agreement: list[dict[str, Any]],
    failed: list[str],
    *,
    kind: str | None = None,
) -> list[str]:
    """What a user should know before trusting the ranking, and what to change (for a
    norm-act panel, ``kind="normact"``, the small-batch proxy preset that tells it apart)."""
    out = []
    for p in proxies:
        ratio = p["discrimination_ratio"]
        if ratio < MIN_DISCRIMINATION:
            advice = (
                "train it longer (more steps), on more samples or a harder dataset, or confirm "
                "winners with more seeds"
            )
            if kind == "normact":
                advice = (
                    f'use the proxy preset {{"preset": "{NORMACT_PRESET}"}} (norm-act layers '
                    "differ at small batches and on a harder task), or " + advice
                )
            out.append(
                f"{p['role']} proxy {p['name']} cannot tell the panel apart: discrimination "
                f"{ratio:.2f} < {MIN_DISCRIMINATION:g} (the panel's means spread "
                f"{100 * p['panel_spread_sd']:.2f} points against a seed SD of "
                f"{100 * p['median_seed_sd']:.2f}): {advice}"
            )
    for a in agreement:
        tau = a["kendall_tau"]
        if math.isnan(tau) or tau < MIN_TAU:
            shown = "undefined" if math.isnan(tau) else f"{tau:.2f}"
            out.append(
                f"search proxy {a['search']} ranks the panel unlike held-out proxy "
                f"{a['transfer']} (Kendall tau {shown} < {MIN_TAU:g}): its winners may not "
                "transfer; make the search proxy closer to the held-out one (architecture, "
                "dataset, steps)"
            )
    if failed:
        out.append(
            f"panel runs of {', '.join(failed)} did not complete (scored 0): check the "
            "proxies' settings"
        )
    return out
