"""The Strategy protocol: ``ask`` for proposals, ``tell`` outcomes, rebuilt from storage.

After Ray Tune's Searcher and Optuna's ask/tell:

* ``ask(n)`` returns up to ``n`` proposals; an empty list means "wait for results".
* The controller stores each proposal as a candidate, then calls ``observe(member)`` with
  the stored row (this is how a proposal learns its candidate id).
* ``tell(candidate_id, values=..., error=...)`` reports an outcome: minimized objective
  values for a completed evaluation, or an error (rejected, failed, timed out).

A strategy keeps no state the database does not: its whole state is the list of members it
has observed, and every random choice is drawn from a generator seeded by the campaign seed
and the number of members observed so far. Rebuilding a strategy is therefore just
``observe``-ing the stored candidates in order, and a rebuilt strategy asks exactly what the
original would have asked.

``interrupt`` (a ``threading.Event``, set by the campaign runner on a cancel or a stop) ends
an ask early: the proposals found so far are returned, so no ask outlives a cancel by more
than one mutation or random graph.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from layerforge.grammar import Graph, Space, fingerprint, passes_static, random_graph
from layerforge.storage import CandidateStatus

FINISHED = (
    CandidateStatus.COMPLETED,
    CandidateStatus.REJECTED,
    CandidateStatus.FAILED,
    CandidateStatus.DUPLICATE,
    CandidateStatus.STOPPED,
)


@dataclass(frozen=True)
class Proposal:
    """A candidate a strategy wants evaluated, with its origin and parents."""

    graph: Graph
    origin: str
    parent_ids: tuple[int, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def with_fingerprint(self, gain: str = "fair") -> Proposal:
        """This proposal with its functional fingerprint (under the campaign's ``gain``
        mode, see :func:`grammar.fingerprint`) filled in."""
        if self.fingerprint:
            return self
        return replace(self, fingerprint=fingerprint(self.graph, gain))


@dataclass
class Member:
    """A stored candidate as strategies see it.

    ``values`` are the minimized objective values once the candidate completed (or copied
    from the original for a duplicate); None while it runs or when it was rejected/failed.
    """

    id: int
    seq: int
    graph: Graph
    fingerprint: str
    origin: str
    status: str = CandidateStatus.PROPOSED
    values: tuple[float, ...] | None = None
    parent_ids: tuple[int, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the candidate has an outcome."""
        return self.status in FINISHED


class Strategy(ABC):
    """Base class holding the observed population and the novelty set."""

    name = "base"

    def __init__(self, space: Space, settings: Any, num_objectives: int, seed: int):
        self.space = space
        self.settings = settings
        self.num_objectives = num_objectives
        self.seed = int(seed)
        # what counts as the same function (see grammar.fingerprint); the campaign sets it
        # from its spec's ``gain`` before the first ask
        self.gain = "fair"
        self.members: dict[int, Member] = {}
        self.order: list[int] = []
        self.seen: set[str] = set()
        self._known_keys: set[str] = set()
        self._valid_keys: set[str] = set()
        self.interrupt: threading.Event | None = None
        # (kind, payload) campaign events a strategy wants recorded (the surrogate's fits);
        # the campaign runner stores and clears them with the next proposals it stores
        self.events: list[tuple[str, dict[str, Any]]] = []

    def drain_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The events recorded since the last call, oldest first (the list is emptied)."""
        events, self.events = self.events, []
        return events

    def interrupted(self) -> bool:
        """True once :attr:`interrupt` is set: an ask in progress returns what it has."""
        return self.interrupt is not None and self.interrupt.is_set()

    # ---------------------------------------------------------------- protocol
    @abstractmethod
    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` new proposals; empty means wait for outcomes."""

    def observe(self, member: Member) -> None:
        """Record a stored candidate (a new proposal, or a row read back on rebuild)."""
        if member.id not in self.members:
            self.order.append(member.id)
        self.members[member.id] = member
        self.seen.add(member.fingerprint)

    def tell(
        self,
        candidate_id: int,
        values: Sequence[float] | None = None,
        *,
        error: str | None = None,
        status: str | None = None,
    ) -> None:
        """Record an outcome: ``values`` (minimized) when completed, else ``error``."""
        member = self.members.get(candidate_id)
        if member is None:
            raise KeyError(f"candidate {candidate_id} was never observed by this strategy")
        if values is not None and error is None:
            if len(values) != self.num_objectives:
                raise ValueError(
                    f"expected {self.num_objectives} objective values, got {len(values)}"
                )
            member.values = tuple(float(v) for v in values)
            member.status = status or CandidateStatus.COMPLETED
        else:
            member.values = None
            member.status = status or CandidateStatus.FAILED

    def rebuild(self, members: Iterable[Member]) -> Strategy:
        """Observe stored members in order; returns self for chaining."""
        for member in sorted(members, key=lambda m: m.seq):
            self.observe(member)
        return self

    # ---------------------------------------------------------------- helpers
    def rng(self, salt: int | str = 0) -> random.Random:
        """A generator determined by the seed, the population size and ``salt``."""
        return random.Random(f"{self.name}:{self.seed}:{len(self.order)}:{salt}")

    def evaluated(self) -> list[Member]:
        """Members with objective values, oldest first."""
        return [self.members[i] for i in self.order if self.members[i].values is not None]

    def is_new(self, graph: Graph, taken: set[str]) -> tuple[bool, str]:
        """Whether ``graph`` passes the static checks and its function was never proposed.

        Structures already judged (same :attr:`Graph.key`) are answered from caches, which
        are derived state: structures whose function is known or invalid, and structures
        known to pass the static checks (shared with :func:`grammar.mutate`).
        """
        key = graph.key
        if key in self._known_keys:
            return False, ""
        if not passes_static(graph, self.space, self._valid_keys):
            self._known_keys.add(key)
            return False, ""
        fp = fingerprint(graph, self.gain)
        if fp in self.seen or fp in taken:
            self._known_keys.add(key)
            return False, fp
        return True, fp

    def random_proposal(
        self,
        rng: random.Random,
        taken: set[str],
        origin: str = "random",
        data: dict[str, Any] | None = None,
    ) -> Proposal | None:
        """A random graph whose function is new, or None when none was found in the budget."""
        for _ in range(int(getattr(self.settings, "max_attempts", 200))):
            if self.interrupted():
                return None
            graph = random_graph(self.space, rng)
            ok, fp = self.is_new(graph, taken)
            if ok:
                taken.add(fp)
                return Proposal(graph, origin, (), dict(data or {}), fp)
        return None
