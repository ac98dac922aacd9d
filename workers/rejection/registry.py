"""The stage registry (after timm's layer registries): a stage is a function of the run.

A stage function takes the :class:`~workers.rejection.run.EvaluationRun`, raises
:class:`~workers.rejection.run.Reject` (the candidate is rejected) or
:class:`~workers.rejection.run.Fail` (the job cannot run), and otherwise returns the reason
it passed. :func:`register_stage` adds one under its :class:`Stage` name; the protocol loop
looks each configured stage up with :func:`get_stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from layerforge.workers.errors import UnknownNameError
from layerforge.workers.rejection.config import STAGES, Stage

if TYPE_CHECKING:
    from layerforge.workers.rejection.run import EvaluationRun

__all__ = ["StageFn", "get_stage", "list_stages", "register_stage"]

StageFn = Callable[["EvaluationRun"], str]
_STAGES: dict[Stage, StageFn] = {}


def register_stage(name: Stage | str) -> Callable[[StageFn], StageFn]:
    """Decorator: register ``fn`` as the implementation of stage ``name``."""
    stage = _stage(name)

    def add(fn: StageFn) -> StageFn:
        _STAGES[stage] = fn
        return fn

    return add


def get_stage(name: Stage | str) -> StageFn:
    """The function implementing stage ``name`` (UnknownNameError listing the stages)."""
    stage = _stage(name)
    _load_builtin_stages()
    return _STAGES[stage]


def list_stages() -> list[Stage]:
    """The registered stages, in protocol order."""
    _load_builtin_stages()
    return [s for s in STAGES if s in _STAGES]


def _stage(name: Stage | str) -> Stage:
    try:
        return Stage(name)
    except ValueError:
        raise UnknownNameError("stage", name, STAGES) from None


def _load_builtin_stages() -> None:
    """Import the modules that register the built-in stages (once; they are cheap to import
    again)."""
    from layerforge.workers.rejection import (  # noqa: F401 - they register on import
        checks,
        depth,
        proxies,
        stability,
    )
