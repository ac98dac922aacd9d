"""Any of Optuna's samplers over a fixed-template encoding of the space.

Optuna knows nothing of graphs, so each candidate is encoded as categorical choices:

* ``activation``: Swish's core unit ``b(u1(x), u2(x))`` — ``u1``, ``u2`` range over the
  space's unary ops plus ``identity``; ``b`` over its binary ops.
* ``normact``: EvoNorm's linear genome with a fixed number of slots; slot ``i`` chooses an
  op, its inputs among the leaves (x, 0, v0, v1) and earlier slots, and an axis for
  aggregations; the last slot is followed by the per-channel affine ``* weight + bias``.

The sampler is chosen by ``settings.sampler``: a name (``"tpe"``) or ``{name, args}``, with
the names and arguments of :data:`SAMPLERS` (checked at submit by :func:`check_sampler`).

One Optuna study lives as long as the strategy and follows Optuna's own ask/tell: each
proposal is a trial asked of the study, kept running while the candidate is evaluated and
told its values (or a failure) when the outcome arrives, in whatever order outcomes come.
A sampled template that breaks the static rules or repeats a known function is told
failed at once and asked again.

Rebuilt from storage, the study is the same study: each proposal's stored data holds its
trial number, the trial's sampler attributes (NSGA's generation) and the study attributes
the sampler wrote since the previous proposal (NSGA's parent populations, QMC's counter);
a rebuild replays them, padding the trial numbers of rejected samples with failed trials,
which samplers never learn from. Each ask draws a fresh sampler seeded by the campaign seed
and the population size, so the sampler holds no state of its own, and a rebuilt strategy
asks what the original would have asked (while the original's last ask ended on a
proposal: an ask that ran out of attempts leaves study attributes that are not stored).
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState, create_trial

from layerforge.grammar import Graph, Node, get_op
from layerforge.search.names import StrategyName
from layerforge.search.strategies.base import Member, Proposal, Strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)

IDENTITY = "identity"
NORMACT_LEAVES = (
    Node("x"),
    Node("const", value=0.0),
    Node("param", name="v0"),
    Node("param", name="v1"),
)

#: The samplers a spec may name, by the class in :mod:`optuna.samplers`. Left out: CMA-ES
#: and the grid and brute-force samplers, which sample no categorical choice themselves
#: or need the search space spelled out. QMC samples only numbers: on this all-categorical
#: encoding every choice falls to its independent (random) sampler.
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "random": "RandomSampler",
}

#: Rejected samples in a row after which an ask samples at random until one is accepted.
ESCAPE_AFTER = 8

#: Arguments the strategy sets itself: the seed comes from the campaign's seed.
RESERVED_ARGUMENTS = frozenset({"seed"})

#: Arguments a spec may not set: NSGA-III's reference points must match the number of
#: objectives, which the sampler settings do not know (``dividing_parameter`` sets them).
NOT_OFFERED = frozenset({"reference_points"})

#: Bounds of integer arguments: beyond, a sampler would exhaust the controller's memory
#: (TPE draws ``n_ei_candidates`` points per sample; NSGA-III makes C(M + p - 1, p)
#: reference points for M objectives, 52,360 for 32 objectives at p = 4).
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "n_startup_trials": (0, 1_000_000),
    "n_ei_candidates": (1, 10_000),
    "population_size": (2, 10_000),
    "dividing_parameter": (1, 4),
}
DEFAULT_INT_BOUNDS = (-1_000_000, 1_000_000)

# What a JSON value can stand for, by the name an annotation uses for it.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}


class SamplerArgumentError(ValueError):
    """A sampler's name or one of its arguments is not usable; ``argument`` names it."""

    def __init__(self, argument: str | None, message: str):
        self.argument = argument
        super().__init__(message)


def sampler_class(name: str) -> type[BaseSampler]:
    """The Optuna sampler class registered under ``name`` (ValueError listing the names)."""
    if name not in SAMPLERS:
        raise SamplerArgumentError(
            None, f"unknown Optuna sampler {name!r}; valid: {', '.join(SAMPLERS)}"
        )
    return getattr(optuna.samplers, SAMPLERS[name])


def sampler_arguments(name: str) -> dict[str, tuple[str, ...]]:
    """The arguments of sampler ``name`` a spec may set, each with the JSON types it takes.

    Read from the sampler's signature, so a new Optuna version's arguments come with it;
    arguments that take Python objects (callables, other samplers, operators) and the seed
    are left out: a spec is JSON, and the campaign's seed seeds the sampler.
    """
    accepted: dict[str, tuple[str, ...]] = {}
    for parameter in inspect.signature(sampler_class(name).__init__).parameters.values():
        if parameter.name in {"self", *RESERVED_ARGUMENTS, *NOT_OFFERED}:
            continue
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        kinds = tuple(part.strip() for part in text.split("|"))
        json_kinds = tuple(kind for kind in kinds if kind in _JSON_TYPES or kind == "None")
        if any(kind in _JSON_TYPES for kind in json_kinds):
            accepted[parameter.name] = json_kinds
    return accepted


def _matches(value: Any, kinds: tuple[str, ...]) -> bool:
    """Whether a JSON ``value`` fits one of the annotation ``kinds``."""
    for kind in kinds:
        if kind == "None" and value is None:
            return True
        if kind == "None" or isinstance(value, bool) and kind != "bool":
            continue
        if isinstance(value, _JSON_TYPES[kind]):
            return True
    return False


def _finite_json(value: Any) -> bool:
    """Whether ``value`` is no NaN or infinity (the only JSON values a float can be)."""
    return math.isfinite(value) if isinstance(value, float) else True


def check_sampler(name: str, args: Mapping[str, Any]) -> None:
    """Raise :class:`SamplerArgumentError` unless sampler ``name`` takes ``args``.

    Each argument must be one the sampler's signature accepts from JSON (see
    :func:`sampler_arguments`) with a value of its type; then the sampler is built once,
    so a value Optuna itself refuses (``group`` without ``multivariate``, a ``qmc_type``
    it does not know) is refused at submit, not when the campaign first asks.
    """
    accepted = sampler_arguments(name)
    signature = inspect.signature(sampler_class(name).__init__).parameters
    for argument, value in args.items():
        if argument in RESERVED_ARGUMENTS:
            raise SamplerArgumentError(
                argument, f"{argument!r} is set by layerforge from the campaign's seed"
            )
        if argument in NOT_OFFERED:
            raise SamplerArgumentError(
                argument,
                f"argument {argument!r} is not offered: it must match the campaign's number "
                "of objectives (dividing_parameter sets NSGA-III's reference points)",
            )
        if argument not in accepted and argument in signature:
            raise SamplerArgumentError(
                argument,
                f"argument {argument!r} of the {name} sampler takes a Python object, which a "
                f"spec cannot carry; JSON arguments: {', '.join(accepted) or 'none'}",
            )
        if argument not in accepted:
            raise SamplerArgumentError(
                argument,
                f"the {name} sampler takes no argument {argument!r}; "
                f"it takes: {', '.join(accepted) or 'none'}",
            )
        if not _finite_json(value):
            raise SamplerArgumentError(
                argument, f"argument {argument!r} holds NaN or an infinity, which JSON cannot"
            )
        if not _matches(value, accepted[argument]):
            raise SamplerArgumentError(
                argument,
                f"argument {argument!r} of the {name} sampler must be "
                f"{' or '.join(accepted[argument])}, got {value!r}",
            )
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = INT_BOUNDS.get(argument, DEFAULT_INT_BOUNDS)
            if not low <= value <= high:
                raise SamplerArgumentError(
                    argument,
                    f"argument {argument!r} of the {name} sampler must be between {low:,} "
                    f"and {high:,}, got {value:,}",
                )
    try:
        build_sampler(name, args, seed=0, population=64)
    except Exception as err:  # noqa: BLE001 - whatever Optuna raises on a value it refuses
        raise SamplerArgumentError(
            None, f"the {name} sampler refuses these arguments: {err}"
        ) from None


def build_sampler(name: str, args: Mapping[str, Any], *, seed: int, population: int) -> BaseSampler:
    """Sampler ``name`` with the spec's ``args`` over layerforge's defaults, seeded.

    The defaults: TPE starts modelling after 10 trials and models the choices jointly
    (``multivariate``); the genetic samplers breed generations of the campaign's population
    size, at most 50; QMC does not warn that it hands every categorical choice to its
    independent sampler (it always does here).
    """
    all_defaults: dict[str, dict[str, Any]] = {
        "tpe": {"n_startup_trials": 10, "multivariate": True},
        "nsga2": {"population_size": max(2, min(population, 50))},
        "nsga3": {"population_size": max(2, min(population, 50))},
        "qmc": {"warn_independent_sampling": False},
    }
    defaults = all_defaults.get(name, {})
    with warnings.catch_warnings():
        # multivariate TPE, group and the GP sampler are marked experimental by Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler: Any = sampler_class(name)  # each takes ``seed``; BaseSampler does not say so
        return sampler(**{**defaults, **dict(args)}, seed=seed)


def sampler_setting(settings: Any) -> tuple[str, dict[str, Any]]:
    """The sampler name and arguments of strategy ``settings`` (a name or ``{name, args}``)."""
    sampler = getattr(settings, "sampler", "tpe")
    if isinstance(sampler, str):
        return sampler, {}
    if isinstance(sampler, Mapping):
        return str(sampler["name"]), dict(sampler.get("args") or {})
    return str(sampler.name), dict(sampler.args or {})


class OptunaSearch(Strategy):
    """Ask/tell through one Optuna study with the sampler ``settings.sampler`` names."""

    name = StrategyName.OPTUNA

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.distributions = self._distributions()
        self.sampler_name, self.sampler_args = sampler_setting(self.settings)
        sampler_class(self.sampler_name)  # an unknown name fails here, not at the first ask
        self.storage = optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(
            storage=self.storage,
            directions=["minimize"] * self.num_objectives,
            sampler=optuna.samplers.RandomSampler(seed=self.seed),
        )
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.trial_of: dict[int, int] = {}  # member id -> its trial number
        self._asked: dict[str, int] = {}  # fingerprint -> trial of a proposal not yet observed
        # the study attributes as of the last stored proposal (or the last one read back),
        # and the attributes as of each proposal not yet stored: a proposal that is never
        # stored (the campaign asked only to know whether it would get one) leaves its
        # attributes to the next proposal that is
        self._study_attrs: dict[str, Any] = {}
        self._attrs_after: dict[str, dict[str, Any]] = {}

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

    # ---------------------------------------------------------------- the study
    def _trial(self, number: int) -> FrozenTrial:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self.storage.get_trial(trial_id)

    def _num_trials(self) -> int:
        return len(self.storage.get_all_trials(self.study_id, deepcopy=False))

    def _changed_attrs(self, since: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The study attributes the sampler wrote since the snapshot ``since``, and the
        snapshot of now."""
        now = dict(self.storage.get_study_system_attrs(self.study_id))
        return {k: v for k, v in now.items() if since.get(k, object()) != v}, now

    def _finish(self, number: int, member: Member) -> None:
        """Tell trial ``number`` the outcome of ``member`` (once; later tells are ignored)."""
        if self._trial(number).state != TrialState.RUNNING:
            return
        if member.values is not None:
            self.study.tell(number, values=list(member.values))
        else:
            self.study.tell(number, state=TrialState.FAIL)

    def _add_stored(self, member: Member) -> int:
        """Add the trial of a stored ``member`` (read back on a rebuild) to the study."""
        data = member.data
        for key, value in (data.get("study_attrs") or {}).items():
            self.storage.set_study_system_attr(self.study_id, key, value)
            self._study_attrs[key] = value
        number = data.get("trial")
        if isinstance(number, int):
            # samples rejected before this one were failed trials: fail as many again
            for _ in range(number - self._num_trials()):
                self.study.add_trial(create_trial(state=TrialState.FAIL))
        finished = member.finished
        self.study.add_trial(
            create_trial(
                params=data["params"],
                distributions=self.distributions,
                values=list(member.values) if finished and member.values is not None else None,
                state=(
                    TrialState.RUNNING
                    if not finished
                    else TrialState.COMPLETE
                    if member.values is not None
                    else TrialState.FAIL
                ),
                system_attrs=dict(data.get("trial_attrs") or {}),
            )
        )
        return self._num_trials() - 1

    # ---------------------------------------------------------------- protocol
    def observe(self, member: Member) -> None:
        """Record a stored candidate; its trial becomes the study's (asked or read back)."""
        known = member.id in self.members
        super().observe(member)
        if known or not member.data.get("params"):
            return
        number = self._asked.pop(member.fingerprint, None)
        if number is None or number != member.data.get("trial"):
            number = self._add_stored(member)
        else:
            self._study_attrs = self._attrs_after.pop(member.fingerprint, self._study_attrs)
        self.trial_of[member.id] = number
        if member.finished:
            self._finish(number, member)

    def tell(
        self,
        candidate_id: int,
        values: Sequence[float] | None = None,
        *,
        error: str | None = None,
        status: str | None = None,
    ) -> None:
        """Record an outcome and tell it to the candidate's trial."""
        super().tell(candidate_id, values, error=error, status=status)
        number = self.trial_of.get(candidate_id)
        if number is not None:
            self._finish(number, self.members[candidate_id])

    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` proposals from the sampler (new functions only).

        Each proposal may take ``settings.max_attempts`` samples; when that many in a row
        are rejected or known, the ask returns what it has. After :data:`ESCAPE_AFTER`
        misses in a row the samples are random until one is accepted.
        """
        for number in self._asked.values():  # proposals never stored: their trials failed
            self.study.tell(number, state=TrialState.FAIL)
        self._asked.clear()
        self._attrs_after.clear()
        attrs_before = self._study_attrs
        rng = self.rng(0)
        model = build_sampler(
            self.sampler_name,
            self.sampler_args,
            seed=rng.randrange(2**31),
            population=int(getattr(self.settings, "population", 64)),
        )
        explore = optuna.samplers.RandomSampler(seed=rng.randrange(2**31))
        proposals: list[Proposal] = []
        taken: set[str] = set()
        attempts = int(getattr(self.settings, "max_attempts", 48))
        misses = 0
        while len(proposals) < n and misses < attempts and not self.interrupted():
            # A model sampler is told nothing by a rejected sample (a failed trial), so it
            # may sample the same point again: after ESCAPE_AFTER misses in a row, random
            # samples until one is accepted (and no GP fit costs seconds per miss).
            self.study.sampler = model if misses < ESCAPE_AFTER else explore
            trial = self.study.ask(self.distributions)
            params = dict(trial.params)
            graph = self.decode(params)
            ok, fp = self.is_new(graph, taken)
            if not ok:
                self.study.tell(trial, state=TrialState.FAIL)
                misses += 1
                continue
            misses = 0
            taken.add(fp)
            self._asked[fp] = trial.number
            data: dict[str, Any] = {"params": params, "trial": trial.number}
            trial_attrs = self._trial(trial.number).system_attrs
            if trial_attrs:
                data["trial_attrs"] = dict(trial_attrs)
            study_attrs, attrs_before = self._changed_attrs(attrs_before)
            self._attrs_after[fp] = attrs_before
            if study_attrs:
                data["study_attrs"] = study_attrs
            proposals.append(Proposal(graph, "optuna", (), data, fp))
        return proposals
