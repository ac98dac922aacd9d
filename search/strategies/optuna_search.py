"""Optuna's TPE or NSGA-II sampler over a fixed-template encoding of the space.

Optuna knows nothing of graphs, so each candidate is encoded as categorical choices:

* ``activation``: Swish's core unit ``b(u1(x), u2(x))`` — ``u1``, ``u2`` range over the
  space's unary ops plus ``identity``; ``b`` over its binary ops.
* ``normact``: EvoNorm's linear genome with a fixed number of slots; slot ``i`` chooses an
  op, its inputs among the leaves (x, 0, v0, v1) and earlier slots, and an axis for
  aggregations; the last slot is followed by the per-channel affine ``* weight + bias``.

Optuna's study lives only in memory and is rebuilt from the stored members on every ask
(their parameters are stored with each candidate), with a sampler seeded by the campaign
seed and the population size, so the strategy holds no state the database does not and a
rebuilt strategy asks what the original would have asked. A template choice that breaks
the static rules or repeats a known function is asked again with the next seed.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from layerforge.grammar import Graph, Node, get_op
from layerforge.search.strategies.base import Proposal, Strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)

IDENTITY = "identity"
NORMACT_LEAVES = (
    Node("x"),
    Node("const", value=0.0),
    Node("param", name="v0"),
    Node("param", name="v1"),
)


class OptunaSearch(Strategy):
    """Ask/tell through an Optuna sampler (``settings.sampler``: ``tpe`` or ``nsga2``)."""

    name = "optuna"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.distributions = self._distributions()

    # ---------------------------------------------------------------- encoding
    def _ops(self, arity: int) -> list[str]:
        return [op for op in self.space.ops if get_op(op).arity == arity]

    def _slots(self) -> int:
        return max(1, min(4, self.space.max_nodes - 2))

    def _distributions(self) -> dict[str, CategoricalDistribution]:
        if self.space.kind == "activation":
            unary = [IDENTITY] + self._ops(1)
            binary = self._ops(2)
            if not binary:
                raise ValueError("the optuna template needs at least one binary op in the space")
            return {
                "u1": CategoricalDistribution(unary),
                "u2": CategoricalDistribution(unary),
                "b": CategoricalDistribution(binary),
            }
        ops = self._ops(1) + self._ops(2)
        axes = list(self.space.axes) or ["instance"]
        dists: dict[str, CategoricalDistribution] = {}
        for i in range(self._slots()):
            width = len(NORMACT_LEAVES) + i
            dists[f"op{i}"] = CategoricalDistribution(ops)
            dists[f"a{i}"] = CategoricalDistribution(list(range(width)))
            dists[f"b{i}"] = CategoricalDistribution(list(range(width)))
            dists[f"axis{i}"] = CategoricalDistribution(axes)
        return dists

    def decode(self, params: dict[str, Any]) -> Graph:
        """The graph a parameter assignment stands for."""
        if self.space.kind == "activation":
            nodes = [Node("x")]
            refs = []
            for slot in ("u1", "u2"):
                if params[slot] == IDENTITY:
                    refs.append(0)
                else:
                    nodes.append(Node(params[slot], (0,)))
                    refs.append(len(nodes) - 1)
            nodes.append(Node(params["b"], tuple(refs)))
            return Graph("activation", tuple(nodes))
        nodes = list(NORMACT_LEAVES)
        for i in range(self._slots()):
            op = get_op(params[f"op{i}"])
            inputs = (params[f"a{i}"], params[f"b{i}"])[: op.arity]
            nodes.append(
                Node(
                    op.name,
                    tuple(int(j) for j in inputs),
                    axis=params[f"axis{i}"] if op.aggregate else None,
                )
            )
        out = len(nodes) - 1
        nodes += [
            Node("param", name="weight"),
            Node("mul", (out, out + 1)),
            Node("param", name="bias"),
            Node("add", (out + 2, out + 3)),
        ]
        return Graph("normact", tuple(nodes))

    # ---------------------------------------------------------------- ask
    def _study(self, salt: int) -> optuna.Study:
        seed = self.rng(salt).randrange(2**31)
        sampler: optuna.samplers.BaseSampler
        if getattr(self.settings, "sampler", "tpe") == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(
                seed=seed, population_size=max(2, min(int(self.settings.population), 50))
            )
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
        study = optuna.create_study(directions=["minimize"] * self.num_objectives, sampler=sampler)
        for member_id in self.order:
            member = self.members[member_id]
            params = member.data.get("params")
            if not params or not member.finished:
                continue
            if member.values is not None:
                trial = create_trial(
                    params=params, distributions=self.distributions, values=list(member.values)
                )
            else:
                trial = create_trial(
                    params=params, distributions=self.distributions, state=TrialState.FAIL
                )
            study.add_trial(trial)
        return study

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` proposals from the sampler (new functions only)."""
        proposals: list[Proposal] = []
        taken: set[str] = set()
        attempts = int(self.settings.max_attempts)
        study = self._study(0)
        salt = 0
        while len(proposals) < n and salt < attempts:
            salt += 1
            trial = study.ask(self.distributions)
            params = dict(trial.params)
            graph = self.decode(params)
            ok, fp = self.is_new(graph, taken)
            # the in-memory study must not learn from an unstored trial: forget it
            study.tell(trial, state=TrialState.FAIL)
            if ok:
                taken.add(fp)
                proposals.append(Proposal(graph, "optuna", (), {"params": params}, fp))
            elif salt % 8 == 0:
                study = self._study(salt)  # a fresh seed escapes a sampler stuck on known points
        return proposals
