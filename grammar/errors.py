"""Errors raised by the grammar package.

Every error this package raises derives from :class:`GrammarError` (itself a ``ValueError``),
so callers (the workers' rejection protocol, the API) can catch one type.
"""

from __future__ import annotations


class GrammarError(ValueError):
    """Base of every error raised by :mod:`grammar` (bad graph, bad op, bad format...)."""


class ParseError(GrammarError):
    """A text expression could not be parsed.

    ``position`` is the 0-based character offset of the offending token and ``token`` its
    text (empty at end of input); the message names both.
    """

    def __init__(self, message: str, position: int, token: str) -> None:
        self.position = int(position)
        self.token = str(token)
        super().__init__(message)
