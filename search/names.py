"""The names of the search strategies, defined once.

A :class:`~enum.StrEnum`: a member is the string a spec names
(``StrategyName.EVOLUTION == "evolution"``), so specs, the API and the database keep plain
strings while the code writes members. This module imports nothing, so that the spec model
can name the strategies without importing them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["StrategyName"]


class StrategyName(StrEnum):
    """A search strategy a campaign spec may name (see :mod:`search.strategies`)."""

    EVOLUTION = "evolution"
    NSGA2 = "nsga2"
    RANDOM = "random"
    OPTUNA = "optuna"
    SURROGATE = "surrogate"
