"""Successive-halving promotion: the controller's view of the rungs and its decisions.

The protocol (see :mod:`workers.jobs`): a search job carries the first rung; the worker
trains the candidate's full evaluation up to it and comes back with the verdict ``"rung"``,
the partial accuracies and a checkpoint. The controller *holds* that result here
(:meth:`Ladder.arrive`), and decides (:meth:`Ladder.decide`) once the rung has seen enough
candidates to rank against (``ceil(1 / fraction)``, the smallest population in which a
top ``fraction`` exists), at once when it is at least ``floor``, or when nothing else is running that could reach it
(``force``): a candidate continues when its accuracy on *some* proxy is in the top
``fraction`` of every candidate that reached that rung so far, or its mean accuracy is at
least ``floor``. Ranking each proxy on its own keeps the multi-objective search whole: a
candidate that may end on the Pareto front by one proxy alone is not stopped for being
average on the others (ranking by the mean stopped such specialists and lost hypervolume,
the earlier runs noted in benchmarks/halving.py). A continued candidate
is sent again with its checkpoint and the next rung (the last continuation trains to the
end); a stopped one is recorded as ``stopped`` with its rung and partial accuracy.

Held candidates occupy no worker: the controller keeps proposing while they wait. Their
checkpoints live in the controller's memory only, so a controller that stops (or crashes)
with candidates held loses those checkpoints: on resume their evaluations are re-queued and
start over, like any evaluation that was in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerforge.workers.jobs import EvaluationJob, EvaluationResult

__all__ = ["Held", "Ladder", "rung_scores"]


def rung_scores(accuracy: Sequence[float | None]) -> tuple[float, ...]:
    """A candidate's validation accuracy per proxy at a rung (a missing or non-finite
    accuracy counts as 0)."""
    return tuple(float(a) if a is not None and math.isfinite(float(a)) else 0.0 for a in accuracy)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class Held:
    """A candidate paused at a rung, waiting for the decision."""

    job_id: str
    candidate_id: int
    job: EvaluationJob
    outcome: EvaluationResult
    rung: int
    scores: tuple[float, ...]


@dataclass
class Ladder:
    """The rungs of one campaign: every score that reached each rung, and who waits."""

    rungs: list[int]
    fraction: float = 0.5
    floor: float | None = None
    scores: dict[int, list[tuple[float, ...]]] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> Ladder:
        """The ladder of a spec's ``promotion`` settings (no rungs: promotion is off)."""
        return cls(list(settings.rungs), float(settings.fraction), settings.floor)

    @property
    def enabled(self) -> bool:
        """Whether search jobs carry rungs at all."""
        return bool(self.rungs)

    @property
    def quorum(self) -> int:
        """Candidates a rung needs before its top ``fraction`` is judged."""
        return max(1, math.ceil(1.0 / self.fraction - 1e-9))

    def first_rung(self) -> int | None:
        """The rung a fresh search job stops at (None: promotion off)."""
        return self.rungs[0] if self.rungs else None

    def next_rung(self, rung: int) -> int | None:
        """The rung after ``rung``; None when the continuation trains to the end."""
        return next((r for r in self.rungs if r > rung), None)

    def remember(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Count a stored run's rungs (``[{"step", "accuracy"}]``, from its result) in the
        rungs' populations: a rebuilt controller ranks against what came before."""
        for entry in history:
            step = int(entry["step"])
            self.scores.setdefault(step, []).append(rung_scores(entry.get("accuracy") or []))

    def arrive(
        self, job_id: str, candidate_id: int, job: EvaluationJob, outcome: EvaluationResult
    ) -> Held:
        """Hold a rung result until :meth:`decide` and count it in its rung's population."""
        result = outcome.result or {}
        rung = int(result["rung"])
        scores = rung_scores([p.get("val_accuracy") for p in result.get("proxies") or []])
        self.scores.setdefault(rung, []).append(scores)
        held = Held(job_id, candidate_id, job, outcome, rung, scores)
        self.held[job_id] = held
        return held

    def _above_floor(self, held: Held) -> bool:
        return self.floor is not None and _mean(held.scores) >= self.floor

    def promotes(self, held: Held) -> bool:
        """Whether ``held`` is in the top ``fraction`` of its rung on some proxy (ties
        continue), or its mean accuracy is at least the floor."""
        if self._above_floor(held):
            return True
        population = self.scores.get(held.rung, [])
        keep = max(1, math.floor(self.fraction * len(population)))
        for index, score in enumerate(held.scores):
            better = sum(1 for s in population if index < len(s) and s[index] > score)
            if better < keep:
                return True
        return not held.scores

    def decide(self, *, force: bool = False) -> list[tuple[Held, bool]]:
        """Decisions for the held candidates whose rung has its quorum (all of them with
        ``force``): ``(held, continues)``, oldest first; the decided ones are released."""
        decided = []
        for job_id, held in list(self.held.items()):
            above_floor = self._above_floor(held)
            quorate = len(self.scores.get(held.rung, [])) >= self.quorum
            if not (force or above_floor or quorate):
                continue
            decided.append((held, self.promotes(held)))
            del self.held[job_id]
        return decided

    def drop_held(self) -> None:
        """Forget every held candidate (their campaign was cancelled or is leaving)."""
        self.held.clear()
