"""Provenance of an exported layer: where it came from, written into the file itself.

An exported file travels on its own (into a paper's code, a colleague's repository), so it
carries what is needed to trace it back and to judge it: the layerforge version, the
campaign and candidate it was found as, that candidate's status and objective values, and
the gain constant its evaluation used. A candidate that was rejected or failed gets a
warning line: its code runs, but nothing says it is any good.

Python targets (pytorch, numpy, jax, sympy) get ``#`` comment lines, LaTeX ``%`` lines, and
JSON a top-level ``"provenance"`` object, which :meth:`grammar.Graph.from_dict` accepts and
ignores, so the file still loads as a graph.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import GrammarError

COMMENT_PREFIX = {
    "pytorch": "# ",
    "numpy": "# ",
    "jax": "# ",
    "sympy": "# ",
    "latex": "% ",
}

#: Candidate statuses whose export is not backed by a completed evaluation.
WARN_STATUSES = {
    "rejected": "was rejected by the campaign's rejection protocol",
    "failed": "failed its evaluation",
    "cancelled": "was cancelled before its evaluation finished",
    "duplicate": "is a duplicate of another candidate; its values are the original's",
    "proposed": "has not been evaluated yet",
    "running": "is still being evaluated",
}


def export_warning(status: str, detail: str | None = None, candidate_id: Any = None) -> str | None:
    """The warning for a candidate in ``status`` (None when it completed), with ``detail``
    (the rejection stage and reason, or the error) when known."""
    what = WARN_STATUSES.get(status)
    if what is None:
        return None
    name = f"candidate {candidate_id}" if candidate_id is not None else "this candidate"
    text = f"{name} {what}"
    if detail:
        text += f" ({detail})"
    if status in ("rejected", "failed", "cancelled"):
        text += "; nothing shows this layer trains well"
    return text


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def provenance_lines(provenance: Mapping[str, Any]) -> list[str]:
    """The header's lines (without comment markers), in a fixed order.

    ``provenance`` keys, all optional: ``layerforge`` (version), ``format``, ``campaign``
    (``{"id", "name"}``), ``candidate`` (``{"id", "text", "origin", "status"}``),
    ``objectives`` (name -> value), ``gain`` (gamma_f, or None when the evaluation did not
    record one), ``warning``.
    """
    lines = [
        f"Exported by layerforge {provenance.get('layerforge', '?')}"
        + (f" as {provenance['format']}" if provenance.get("format") else "")
    ]
    campaign = provenance.get("campaign") or {}
    candidate = provenance.get("candidate") or {}
    if campaign or candidate:
        where = f"candidate {candidate.get('id', '?')}"
        if campaign:
            where += f" of campaign {campaign.get('id', '?')}"
            if campaign.get("name"):
                where += f" ({campaign['name']})"
        lines.append(where)
    if candidate.get("text"):
        lines.append(f"layer: {candidate['text']}")
    if candidate.get("status"):
        status = f"status: {candidate['status']}"
        if candidate.get("origin"):
            status += f" (origin: {candidate['origin']})"
        lines.append(status)
    objectives = provenance.get("objectives")
    if objectives is not None:
        shown = ", ".join(f"{k} = {_number(v)}" for k, v in objectives.items())
        lines.append(f"objectives: {shown or 'none recorded'}")
    if "gain" in provenance:
        gain = provenance["gain"]
        if gain is None:
            lines.append("gain constant: none recorded (the evaluation ran the raw function)")
        else:
            lines.append(
                f"gain constant: gamma_f = {_number(gain)} (the evaluated layer is f(x) / gamma_f;"
                " the code below includes the factor 1 / gamma_f)"
            )
    if provenance.get("warning"):
        lines.append(f"WARNING: {provenance['warning']}")
    return lines


def with_provenance(text: str, fmt: str, provenance: Mapping[str, Any]) -> str:
    """``text`` (an export in format ``fmt``) with its provenance header, ending in a newline."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise GrammarError(f"the json export is not JSON: {err}") from None
        return json.dumps({"provenance": dict(provenance), **data}, indent=2) + "\n"
    prefix = COMMENT_PREFIX.get(fmt)
    if prefix is None:
        raise GrammarError(f"no provenance header for format {fmt!r}")
    header = "".join(
        f"{prefix}{line}".rstrip() + "\n"
        for entry in provenance_lines(provenance)
        for line in entry.splitlines()
    )
    body = text if text.endswith("\n") else text + "\n"
    return header + body
