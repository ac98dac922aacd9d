"""EvoNorm's asynchronous multi-objective tournament with aging.

Each proposal: sample ``tournament`` members of the population (the ``population`` most
recently evaluated candidates: the oldest leave, which is the aging of regularized
evolution), take the Pareto front of that sample over all objectives, pick one of its
members at random and mutate it until the child is new (functional fingerprint) and passes
the static checks. Until the population holds ``tournament`` evaluated members, proposals
are random graphs, so the search starts without waiting when the seeds are few.
"""

from __future__ import annotations

from layerforge.grammar import mutate
from layerforge.search.names import StrategyName
from layerforge.search.pareto import pareto_front
from layerforge.search.strategies.base import Proposal, Strategy


class Evolution(Strategy):
    """Asynchronous Pareto tournament selection + EvoNorm mutation + aging."""

    name = StrategyName.EVOLUTION

    def population(self) -> list:
        """The living population: the most recent ``population`` evaluated members."""
        return self.evaluated()[-int(self.settings.population) :]

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` children of tournament winners (random graphs while warming up)."""
        rng = self.rng()
        taken: set[str] = set()
        proposals: list[Proposal] = []
        population = self.population()
        tournament = min(int(self.settings.tournament), len(population))
        for _ in range(n):
            if self.interrupted():
                break
            if len(population) < max(2, int(self.settings.tournament)):
                proposal = self.random_proposal(rng, taken)
            else:
                sample = rng.sample(population, tournament)
                front = pareto_front([m.values for m in sample])
                parent = sample[rng.choice(front)] if front else rng.choice(sample)
                proposal = self._child(parent, rng, taken)
            if proposal is None:
                break
            proposals.append(proposal)
        return proposals

    def _child(self, parent, rng, taken) -> Proposal | None:
        graph = parent.graph
        for attempt in range(int(self.settings.max_attempts)):
            if self.interrupted():
                return None
            # keep mutating the last child: a chain of mutations escapes a parent whose
            # every single mutation is a known function; restart from the parent now and then
            graph = mutate(
                parent.graph if attempt % 16 == 0 else graph,
                self.space,
                rng,
                valid_keys=self._valid_keys,
            )
            ok, fp = self.is_new(graph, taken)
            if ok:
                taken.add(fp)
                return Proposal(graph, "mutation", (parent.id,), {}, fp)
        return self.random_proposal(rng, taken)
