"""What a campaign runner knows while it runs: one :class:`RunState`, rebuilt from storage.

A :class:`search.campaign.CampaignRunner` keeps its configuration on itself and everything
it learns or counts while running in one :class:`RunState`: a runner that takes a campaign
over (after a restart, a pause, a lost connection) builds a fresh one from what is stored,
so nothing a run knows lives anywhere else.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from layerforge.search.objectives import Objective
from layerforge.search.pareto import hypervolume
from layerforge.search.promotion import Ladder
from layerforge.search.spec import CampaignSpec
from layerforge.search.strategies import Strategy

__all__ = ["Claim", "Front", "RunState"]


@dataclass(frozen=True)
class Claim:
    """What taking ownership of a campaign reads: the spec with its objectives and reference
    point, and the seconds the runners before this one ran it."""

    spec: CampaignSpec
    objectives: list[Objective]
    reference: list[float]
    elapsed_before: float


@dataclass
class Front:
    """The non-dominated set on the minimizing scale, kept incrementally."""

    reference: list[float]
    points: list[list[float]] = field(default_factory=list)
    value: float = 0.0

    def add(self, point: list[float]) -> bool:
        """Add ``point`` unless a point already on the front dominates it (or it has a NaN),
        dropping the points it dominates; returns whether it joined the front."""
        if any(math.isnan(v) for v in point):
            return False
        for p in self.points:
            if all(a <= b for a, b in zip(p, point)):
                return False
        self.points = [p for p in self.points if not all(a <= b for a, b in zip(point, p))]
        self.points.append(point)
        self.value = hypervolume(self.points, self.reference)
        return True


@dataclass
class RunState:
    """One run of one campaign: the claimed spec, the strategy and the front rebuilt from
    storage, the counters the progress reports, the jobs in flight and the side jobs (the
    proxy-fidelity panel, the transfer stage's scale controls) beside the search."""

    spec: CampaignSpec
    objectives: list[Objective]
    elapsed_before: float  # seconds the earlier runners ran the campaign
    strategy: Strategy
    front: Front
    counts: dict[str, int]  # candidates per status
    funnel: dict[str, int]  # rejections per stage
    num_candidates: int
    evaluations_done: int  # search evaluations that ended (completed, failed, timeout, stopped)
    has_baseline: bool
    seed_indices: set[int]  # the spec's seeds already stored
    cannot_run: str | None = None  # why the campaign cannot run (its baseline failed)
    started: float = field(default_factory=time.monotonic)
    dispatched: dict[str, int] = field(default_factory=dict)  # job id -> candidate id
    status: str | None = None  # the campaign's status as last read
    waiting: str | None = None  # the evaluator's last reason for waiting
    last_control: float = 0.0  # monotonic time of the last status read
    last_heartbeat: float = 0.0
    last_waiting_check: float = 0.0
    # the proxy-fidelity panel (search/fidelity.py): its job ids in flight, the accuracies
    # of its runs so far, and what it trains
    fidelity_pending: set[str] = field(default_factory=set)
    fidelity_runs: dict[tuple[str, int], list[float | None]] = field(default_factory=dict)
    fidelity_plan: dict[str, Any] = field(default_factory=dict)
    # the transfer stage's scale controls in flight (search/transfer.py)
    controls_pending: set[str] = field(default_factory=set)
    # successive halving (search/promotion.py): every rung's scores, and the candidates
    # held at a rung until its decision (promotion off: no rungs)
    ladder: Ladder = field(default_factory=lambda: Ladder([]))

    def elapsed(self) -> float:
        """Seconds the campaign has run, over all the runners that ran it."""
        return self.elapsed_before + (time.monotonic() - self.started)
