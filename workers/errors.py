"""Errors raised by the workers package.

Every error a user can trigger with bad input (an unknown architecture or dataset, a missing
optional dependency, a bad proxy-task value) is one of these, with a message that says what
was wrong and what the valid choices are.
"""

from __future__ import annotations

from collections.abc import Iterable


class WorkersError(Exception):
    """Base class of errors raised by :mod:`workers`."""


class UnknownNameError(WorkersError, ValueError, KeyError):
    """An unknown architecture, dataset or stage name; the message lists the valid ones."""

    def __init__(self, what: str, name: object, valid: Iterable[str]):
        self.what = what
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {what} {name!r}; valid {what}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DatasetUnavailableError(WorkersError, RuntimeError):
    """A dataset cannot be loaded here (missing optional dependency or missing files)."""


class InvalidConfigError(WorkersError, ValueError):
    """A proxy task or rejection config has a bad value; ``field`` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
