"""Random search: every proposal is a fresh random graph. The baseline every search is judged by."""

from __future__ import annotations

from layerforge.search.names import StrategyName
from layerforge.search.strategies.base import Proposal, Strategy


class RandomSearch(Strategy):
    """Propose new random graphs of the space, never repeating a function."""

    name = StrategyName.RANDOM

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` random proposals (fewer only if the space seems exhausted)."""
        rng = self.rng()
        taken: set[str] = set()
        proposals = []
        for _ in range(n):
            if self.interrupted():
                break
            proposal = self.random_proposal(rng, taken)
            if proposal is None:
                break
            proposals.append(proposal)
        return proposals
