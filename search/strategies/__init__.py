"""Search strategies: a plain registry and one constructor shape for all of them."""

from __future__ import annotations

from layerforge.search.names import StrategyName
from layerforge.search.strategies.base import Member, Proposal, Strategy
from layerforge.search.strategies.evolution import Evolution
from layerforge.search.strategies.nsga2 import NSGA2
from layerforge.search.strategies.random_search import RandomSearch
from layerforge.search.strategies.surrogate import Surrogate

STRATEGIES: dict[str, type[Strategy]] = {
    StrategyName.EVOLUTION: Evolution,
    StrategyName.NSGA2: NSGA2,
    StrategyName.RANDOM: RandomSearch,
    StrategyName.SURROGATE: Surrogate,
}


def _register_optuna() -> None:
    try:
        from layerforge.search.strategies.optuna_search import OptunaSearch
    except ImportError:  # pragma: no cover - optuna is a dependency
        return
    STRATEGIES[StrategyName.OPTUNA] = OptunaSearch


_register_optuna()


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None


def create_strategy(name: str, space, settings, num_objectives: int, seed: int) -> Strategy:
    """Build a strategy; every strategy takes (space, settings, num_objectives, seed)."""
    return get_strategy(name)(space, settings, num_objectives, seed)


__all__ = ["Member", "Proposal", "STRATEGIES", "Strategy", "create_strategy", "get_strategy"]
