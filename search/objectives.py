"""Objectives of a campaign: names, directions, reference point, and values from a result.

Accuracy is measured per proxy (``accuracy:mlp/mnist1d``) and maximized; the optional costs
(``runtime`` ratio to the baseline layer, ``nodes``, ``params``) are minimized. Pareto and
hypervolume code works on values to minimize, so :func:`to_minimize` negates accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RUNTIME_REFERENCE = 10.0
PARAMS_REFERENCE = 1e6


@dataclass(frozen=True)
class Objective:
    """One objective: its stored name, whether larger is better, its reference value."""

    name: str
    maximize: bool
    reference: float
    proxy_index: int | None = None

    def minimized(self, value: float) -> float:
        """The value on the minimizing scale Pareto and hypervolume code use."""
        return -value if self.maximize else value


def campaign_objectives(spec) -> list[Objective]:
    """The concrete objectives of a campaign spec (accuracy expands to one per proxy)."""
    objectives: list[Objective] = []
    names = [f"{p['arch']}/{p['dataset']}" for p in spec.proxies]
    for requested in spec.objectives:
        if requested == "accuracy":
            for index, name in enumerate(names):
                unique = name if names.count(name) == 1 else f"{name}#{index}"
                objectives.append(Objective(f"accuracy:{unique}", True, 0.0, index))
        elif requested == "runtime":
            objectives.append(Objective("runtime", False, RUNTIME_REFERENCE))
        elif requested == "nodes":
            objectives.append(Objective("nodes", False, float(spec.space.max_nodes + 64)))
        elif requested == "params":
            objectives.append(Objective("params", False, PARAMS_REFERENCE))
    return objectives


def reference_point(objectives: Sequence[Objective]) -> list[float]:
    """The hypervolume reference point on the minimizing scale (fixed at campaign start)."""
    return [o.minimized(o.reference) for o in objectives]


def to_minimize(
    objectives: Sequence[Objective], table: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Rows of stored values turned into rows to minimize."""
    return [[o.minimized(v) for o, v in zip(objectives, row)] for row in table]


def values_from_result(
    objectives: Sequence[Objective], result: Mapping[str, Any], num_nodes: int
) -> dict[str, float]:
    """Objective values of a completed evaluation result (workers' result dict)."""
    proxies = result.get("proxies") or []
    costs = result.get("costs") or {}
    values: dict[str, float] = {}
    for objective in objectives:
        if objective.proxy_index is not None:
            proxy = proxies[objective.proxy_index] if objective.proxy_index < len(proxies) else {}
            values[objective.name] = _float(proxy.get("val_accuracy"))
        elif objective.name == "runtime":
            values[objective.name] = _float(costs.get("runtime_ratio"))
        elif objective.name == "nodes":
            values[objective.name] = float(num_nodes)
        elif objective.name == "params":
            values[objective.name] = _float(costs.get("num_params"))
    return values


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
