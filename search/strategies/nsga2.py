"""NSGA-II: generational search by non-dominated rank and crowding distance.

Generation 0 is the campaign's seeds plus random graphs up to ``population``. Each later
generation is ``population`` children of parents chosen by binary tournament on (rank,
crowding) among the survivors of the previous one; survivors are the best ``population`` of
parents and children together (elitism). A generation starts only once every member of the
previous one has an outcome, so ``ask`` returns nothing (wait) in between. Rejected and
failed members rank last. The generation of each member is stored with it.
"""

from __future__ import annotations

import math

import numpy as np

from layerforge.grammar import mutate
from layerforge.search.names import StrategyName
from layerforge.search.pareto import crowding_distance, non_dominated_sort
from layerforge.search.strategies.base import Member, Proposal, Strategy


class NSGA2(Strategy):
    """Generational NSGA-II over the grammar's mutation operator."""

    name = StrategyName.NSGA2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._survivors: dict[int, list[Member]] = {}

    def generation_of(self, member: Member) -> int:
        """The generation a member belongs to (seeds and baselines: 0)."""
        return int(member.data.get("generation", 0))

    def _generation(self, g: int) -> list[Member]:
        return [self.members[i] for i in self.order if self.generation_of(self.members[i]) == g]

    def _values(self, member: Member) -> tuple[float, ...]:
        return member.values if member.values is not None else (math.inf,) * self.num_objectives

    def rank_and_crowding(self, members: list[Member]) -> tuple[dict[int, int], dict[int, float]]:
        """NSGA-II rank (0 = front) and crowding distance of each member, by id."""
        values = np.array([self._values(m) for m in members], dtype=float)
        rank: dict[int, int] = {}
        crowd: dict[int, float] = {}
        for r, front in enumerate(non_dominated_sort(values)):
            distances = crowding_distance(values[front])
            for index, distance in zip(front, distances):
                rank[members[index].id] = r
                crowd[members[index].id] = float(distance)
        return rank, crowd

    def survivors(self, g: int) -> list[Member]:
        """The ``population`` best of generation g and the survivors of g-1 (elitism)."""
        if g in self._survivors:
            return self._survivors[g]
        pool = self._generation(g) + (self.survivors(g - 1) if g > 0 else [])
        rank, crowd = self.rank_and_crowding(pool)
        best = sorted(pool, key=lambda m: (rank[m.id], -crowd[m.id], m.seq))
        chosen = best[: int(self.settings.population)]
        if all(m.finished for m in pool):
            self._survivors[g] = chosen
        return chosen

    def observe(self, member: Member) -> None:
        """Record a member; a changed generation invalidates cached survivors."""
        super().observe(member)
        self._survivors.pop(self.generation_of(member), None)

    def tell(self, candidate_id, values=None, *, error=None, status=None) -> None:
        """Record an outcome (and forget survivors computed before it)."""
        super().tell(candidate_id, values, error=error, status=status)
        self._survivors.pop(self.generation_of(self.members[candidate_id]), None)

    def ask(self, n: int) -> list[Proposal]:
        """Fill the current generation, or open the next once this one is finished."""
        population = int(self.settings.population)
        current = max((self.generation_of(m) for m in self.members.values()), default=0)
        members = self._generation(current)
        if len(members) >= population:
            if not all(m.finished for m in members):
                return []
            current += 1
            members = []
        rng = self.rng()
        taken: set[str] = set()
        want = min(n, population - len(members))
        proposals: list[Proposal] = []
        if current == 0:
            for _ in range(want):
                if self.interrupted():
                    break
                proposal = self.random_proposal(rng, taken, data={"generation": 0})
                if proposal is None:
                    break
                proposals.append(proposal)
            return proposals
        parents = self.survivors(current - 1)
        rank, crowd = self.rank_and_crowding(parents)
        for _ in range(want):
            if self.interrupted():
                break
            proposal = self._offspring(parents, rank, crowd, rng, taken, current)
            if proposal is None:
                break
            proposals.append(proposal)
        return proposals

    def _offspring(self, parents, rank, crowd, rng, taken, generation) -> Proposal | None:
        a, b = rng.choice(parents), rng.choice(parents)
        parent = min((a, b), key=lambda m: (rank[m.id], -crowd[m.id], m.seq))
        graph = parent.graph
        for attempt in range(int(self.settings.max_attempts)):
            if self.interrupted():
                return None
            graph = mutate(
                parent.graph if attempt % 16 == 0 else graph,
                self.space,
                rng,
                valid_keys=self._valid_keys,
            )
            ok, fp = self.is_new(graph, taken)
            if ok:
                taken.add(fp)
                return Proposal(graph, "mutation", (parent.id,), {"generation": generation}, fp)
        return self.random_proposal(rng, taken, data={"generation": generation})
