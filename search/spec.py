"""The campaign spec: the body of ``POST /api/v1/campaigns`` and of ``layerforge run FILE``.

Every field but ``space`` and ``proxies`` has a default. Unknown fields and bad values are
rejected by pydantic with the path of the field in the error; seeds are parsed by the
grammar's parser (never evaluated), proxies are checked against the workers' registries,
and nothing is stored before the whole spec is valid.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from layerforge.search.names import StrategyName
from layerforge.workers.rejection.config import RejectionSettings

STRATEGIES = tuple(s.value for s in StrategyName)
OBJECTIVES = ("accuracy", "runtime", "nodes", "params")

# What a spec may ask for. Each bound leaves room above what a real campaign on a cluster
# needs (the EvoNorm search ran on 5,000 workers for 2 days) and refuses what could not run:
# a number that would exhaust the controller's memory, the database or a worker, or run for
# longer than anyone waits.
MAX_POPULATION = 10_000
MAX_ATTEMPTS = 10_000
MAX_PARALLELISM = 16_384  # EvoNorm ran on 5,000 workers; the controller is benchmarked at 10,000
MAX_CANDIDATES = 1_000_000
MAX_SECONDS = 30 * 24 * 3600.0  # 30 days
MAX_SEEDS = 1_000
MAX_PROXIES = 32
MAX_TOP_K = 1_000
MAX_TRANSFER_SEEDS = 32
MAX_STEPS = 1_000_000  # training steps of one proxy run
MAX_BATCH = 65_536  # training or evaluation batch of one proxy run
MAX_WIDTH = 64.0  # a proxy's width multiplier (``scale`` as a number)
MAX_SEED = 2**31 - 1
# the probe tensors are probe_batch x probe_channels x probe_size x probe_size floats
MAX_PROBE_ELEMENTS = 2**27  # 512 MiB of float32


class SpecError(ValueError):
    """A campaign spec is invalid; ``errors`` lists (field path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


class _Strict(BaseModel):
    # allow_inf_nan=False: Infinity/NaN are not JSON; a spec holding one could not be stored
    # on PostgreSQL (its JSON type rejects them) nor answered (JSON responses forbid them).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpaceSpec(_Strict):
    """Which search space: its kind, its op preset (or op list) and its size limits."""

    kind: Literal["activation", "normact"]
    ops: str | list[str] = Field("full", description="preset name (swish, evonorm, full) or ops")
    max_nodes: int = Field(8, ge=1, le=64)
    max_depth: int = Field(8, ge=1, le=64)
    require_statistic: bool = Field(
        False,
        description="normact only: propose only layers that use a statistic (a mean, second "
        "moment or std over an axis); without one a normact graph is an activation with a "
        "learnt affine",
    )

    @model_validator(mode="after")
    def _check_with_grammar(self) -> SpaceSpec:
        self.build()
        return self

    def build(self):
        """The grammar's :class:`grammar.Space` for this spec (raises ValueError when invalid)."""
        from layerforge.grammar import OPS, GrammarError, make_space
        from layerforge.grammar.parser import did_you_mean

        for name in [] if isinstance(self.ops, str) else self.ops:
            if name not in OPS:
                raise ValueError(
                    f"unknown op {name!r}{did_you_mean(name, OPS)}; known ops: {', '.join(sorted(OPS))}"
                )
        try:
            return make_space(
                self.kind,
                ops=self.ops,
                max_nodes=self.max_nodes,
                max_depth=self.max_depth,
                require_statistic=self.require_statistic,
            )
        except GrammarError as err:
            raise ValueError(str(err)) from None


OPTUNA_SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "qmc", "random")


class SamplerSpec(_Strict):
    """The ``optuna`` strategy's sampler: an Optuna sampler by name, with its arguments.

    ``"tpe"`` alone stands for ``{"name": "tpe"}``. ``args`` are the sampler's own keyword
    arguments (``{"multivariate": true, "group": true}`` for TPE, ``{"population_size":
    20}`` for NSGA-III), checked against its signature; the seed comes from the campaign.
    """

    name: Literal["tpe", "nsga2", "nsga3", "gp", "qmc", "random"] = Field(
        "tpe", description="Optuna sampler: " + ", ".join(OPTUNA_SAMPLERS)
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="the sampler's keyword arguments (JSON values)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("args")
    @classmethod
    def _check_args(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if not args or name is None:  # no name: its own error says which names are valid
            return args
        from layerforge.search.strategies.optuna_search import check_sampler

        check_sampler(name, args)  # a ValueError naming the argument
        return args


MAX_SCREEN = 100_000  # candidates screened per ask: each costs tens of microseconds
MAX_TRAIN = 2_000  # members a surrogate fits on: a Gaussian process costs O(n^3)


class SurrogateSpec(_Strict):
    """The ``surrogate`` strategy's settings (search/strategies/surrogate.py)."""

    screen: int = Field(
        500,
        ge=1,
        le=MAX_SCREEN,
        description=f"new candidates scored by the surrogate per ask; at most {MAX_SCREEN:,}",
    )
    exploration: float = Field(
        0.1, ge=0.0, le=1.0, description="share of proposals that are plain random graphs"
    )
    random_share: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="share of the screened pool that is random graphs (the rest: mutations)",
    )
    min_fit: int = Field(
        8,
        ge=3,
        le=MAX_TRAIN,
        description="evaluated members needed before the surrogate fits (until then: random)",
    )
    max_train: int = Field(
        256,
        ge=3,
        le=MAX_TRAIN,
        description=f"the most recent members the surrogate fits on; at most {MAX_TRAIN:,}",
    )
    model: Literal["auto", "gp", "knn"] = Field(
        "auto",
        description="'auto': per objective, the regressor with the better leave-one-out "
        "Spearman correlation on the campaign's members; 'gp' or 'knn' to force one",
    )
    pca_components: int = Field(
        6, ge=1, le=64, description="dimensions of the PCA projection the regressors see"
    )
    kappa: float = Field(
        1.0, ge=0.0, le=10.0, description="optimism: candidates are scored at mean - kappa*std"
    )
    parents: int = Field(
        8,
        ge=1,
        le=MAX_POPULATION,
        description="best members (besides the front) whose mutations fill the pool",
    )

    @model_validator(mode="after")
    def _fits_after_min(self) -> SurrogateSpec:
        if self.max_train < self.min_fit:
            raise ValueError(
                f"max_train ({self.max_train}) cannot be below min_fit ({self.min_fit})"
            )
        return self


class StrategySpec(_Strict):
    """Which strategy proposes candidates, and its settings."""

    name: StrategyName = StrategyName.EVOLUTION
    population: int = Field(
        64,
        ge=2,
        le=MAX_POPULATION,
        description=f"population size (with aging); at most {MAX_POPULATION:,}",
    )
    tournament: int = Field(
        8,
        ge=1,
        le=MAX_POPULATION,
        description=f"sample size of a tournament; at most the population ({MAX_POPULATION:,})",
    )
    sampler: SamplerSpec = Field(
        default_factory=lambda: SamplerSpec(name="tpe"),
        description=(
            "the optuna strategy's sampler: a name or {name, args}; names: "
            + ", ".join(OPTUNA_SAMPLERS)
        ),
    )
    surrogate: SurrogateSpec = Field(
        default_factory=SurrogateSpec, description="settings of the surrogate strategy"
    )
    max_attempts: int = Field(
        48,
        ge=1,
        le=MAX_ATTEMPTS,
        description=f"mutations tried per proposal before a random graph; at most {MAX_ATTEMPTS:,}",
    )

    @model_validator(mode="after")
    def _tournament_fits(self) -> StrategySpec:
        if self.tournament > self.population:
            raise ValueError(
                f"tournament ({self.tournament}) cannot exceed population ({self.population})"
            )
        return self


def _tighter(name: str, limit: int, why: str) -> Any:
    """``RejectionSettings``'s field ``name`` (its default and description) with the upper
    bound ``limit`` that a campaign spec may ask for."""
    field = RejectionSettings.model_fields[name]
    return Field(
        field.default, ge=1, le=limit, description=f"{field.description}; at most {limit:,} ({why})"
    )


class RejectionSpec(RejectionSettings):
    """The rejection protocol's stages and thresholds: the workers' own settings model
    (:class:`workers.rejection.RejectionSettings`), so every default exists once; a spec's
    probe and stability sizes are bounded tighter, by the memory one job may use."""

    probe_batch: int = _tighter("probe_batch", 4_096, "the probe tensors are held in memory")
    probe_channels: int = _tighter("probe_channels", 4_096, "the probe tensors are held in memory")
    probe_size: int = _tighter("probe_size", 1_024, "the probe tensors are held in memory")
    probe_scales: list[float] = Field(
        default_factory=lambda: [1.0, 10.0],
        min_length=1,
        max_length=16,
        description=f"{RejectionSettings.model_fields['probe_scales'].description}; at most 16",
    )
    stability_steps: int = _tighter(
        "stability_steps", 10_000, "each step is a forward and backward"
    )
    stability_batch: int = _tighter("stability_batch", MAX_BATCH, "one batch is held in memory")
    trainability_steps: int = _tighter("trainability_steps", MAX_STEPS, "as a proxy's steps")
    quality_steps: int = _tighter("quality_steps", MAX_STEPS, "as a proxy's steps")
    depth_width: int = _tighter("depth_width", 4_096, "the probe's weights are held in memory")
    depth_steps: int = _tighter("depth_steps", MAX_STEPS, "as a proxy's steps")

    @model_validator(mode="after")
    def _probe_fits_in_memory(self) -> RejectionSpec:
        elements = self.probe_batch * self.probe_channels * self.probe_size**2
        if elements > MAX_PROBE_ELEMENTS:
            raise ValueError(
                f"probe_batch x probe_channels x probe_size^2 is {elements:,} values per probe "
                f"tensor; at most {MAX_PROBE_ELEMENTS:,} (512 MiB of float32)"
            )
        return self


class BudgetSpec(_Strict):
    """When the campaign stops: after this many candidates or this many seconds."""

    max_candidates: int = Field(
        500, ge=1, le=MAX_CANDIDATES, description=f"at most {MAX_CANDIDATES:,} candidates"
    )
    max_seconds: float = Field(
        3600.0, gt=0, le=MAX_SECONDS, description=f"at most {MAX_SECONDS:,.0f} s (30 days)"
    )


class PromotionSpec(_Strict):
    """Successive-halving promotion (multi-fidelity), off by default: each candidate's full
    run pauses at every rung (a step count of the full run); it continues only while its
    validation accuracy there on some proxy is in the top ``fraction`` of every candidate
    that reached that rung (or its mean accuracy is at least ``floor``), else it is recorded
    as ``stopped`` with its rung and partial accuracy. The runs continue from their checkpoints: nothing trains
    twice."""

    rungs: list[int] = Field(
        default_factory=list,
        max_length=16,
        description="increasing step counts, each at most the proxies' steps (empty: off)",
    )
    fraction: float = Field(
        0.5, gt=0, lt=1, description="share of a rung's candidates that continue, in (0, 1)"
    )
    floor: float | None = Field(
        None, ge=0, le=1, description="a mean accuracy at a rung that always continues"
    )

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: list[int]) -> list[int]:
        for index, rung in enumerate(rungs):
            if isinstance(rung, bool) or rung < 1:
                raise ValueError(f"rungs[{index}] must be a step count >= 1, got {rung!r}")
            if index and rung <= rungs[index - 1]:
                raise ValueError(
                    f"rungs must be increasing: rungs[{index}] = {rung} follows "
                    f"rungs[{index - 1}] = {rungs[index - 1]}"
                )
        return rungs

    @property
    def enabled(self) -> bool:
        """Whether the campaign promotes by rungs at all."""
        return bool(self.rungs)


class FidelitySpec(_Strict):
    """The proxy-fidelity report (search/fidelity.py): a panel of built-ins trained on every
    proxy while the campaign starts, telling whether the proxies can tell layers apart."""

    enabled: bool = Field(True, description="false: no panel, no report")
    seeds: int = Field(2, ge=2, le=10, description="seeds per panel member (>= 2: seed noise)")
    panel: list[str] | None = Field(
        None,
        min_length=3,
        max_length=20,
        description="built-in names (default: relu, silu, gelu, tanh, elu, softplus for "
        "activation; bn_relu, gn_relu, in_relu, ln_relu, evonorm_b0, evonorm_s0 for normact)",
    )


class TransferSpec(_Strict):
    """Re-evaluate the top K on held-out proxies with several seeds when the search ends."""

    top_k: int = Field(
        0,
        ge=0,
        le=MAX_TOP_K,
        description=f"0 switches the transfer stage off; at most {MAX_TOP_K:,}",
    )
    seeds: int = Field(
        3,
        ge=1,
        le=MAX_TRANSFER_SEEDS,
        description=f"training runs per candidate and proxy; at most {MAX_TRANSFER_SEEDS}",
    )
    proxies: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_PROXIES,
        description=f"held-out proxies (default: the search's); at most {MAX_PROXIES}",
    )

    lr_factors: list[float] = Field(
        default_factory=lambda: [1.0, 0.5],
        min_length=1,
        max_length=4,
        description="each held-out proxy also runs at these multiples of its learning rate "
        "(default: as set, and at half): a winner must not depend on one learning rate",
    )
    controls: bool = Field(
        True,
        description="activation campaigns: also train 2·relu and 3·relu raw (no gain "
        "normalization) on the held-out proxies, to show what output scale alone would do",
    )

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _validate_proxies(proxies, "transfer.proxies")

    @field_validator("lr_factors")
    @classmethod
    def _check_lr_factors(cls, factors: list[float]) -> list[float]:
        for index, factor in enumerate(factors):
            if not 0 < factor <= 10:
                raise ValueError(f"lr_factors[{index}]: must be > 0 and <= 10, got {factor!r}")
        if len(set(factors)) != len(factors):
            raise ValueError("lr_factors: a factor is listed twice")
        return factors


class CampaignSpec(_Strict):
    """A whole campaign, as a user submits it."""

    name: str = Field("campaign", min_length=1, max_length=200)
    space: SpaceSpec
    seeds: list[str] = Field(
        default_factory=list,
        max_length=MAX_SEEDS,
        description=f"at most {MAX_SEEDS:,} layers (built-in names or expressions)",
    )
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    proxies: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_PROXIES,
        description=(
            f"at most {MAX_PROXIES} proxies, each with at most {MAX_STEPS:,} steps, batches of "
            f"at most {MAX_BATCH:,} and dataset_options within its dataset's limits"
        ),
    )
    objectives: list[Literal["accuracy", "runtime", "nodes", "params"]] = Field(
        default_factory=lambda: ["accuracy"],  # type: ignore[arg-type]  # pydantic validates
        min_length=1,
    )
    rejection: RejectionSpec = Field(default_factory=RejectionSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    transfer: TransferSpec = Field(default_factory=TransferSpec)
    parallelism: int = Field(
        4,
        ge=1,
        le=MAX_PARALLELISM,
        description=f"evaluations in flight at once; at most {MAX_PARALLELISM:,}",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    fidelity: FidelitySpec = Field(default_factory=FidelitySpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    gain: Literal["fair", "raw"] = Field(
        "fair",
        description=(
            "'fair' (default): activations train as f / gamma_f, gamma_f = sqrt(E[f(z)^2]) on "
            "z ~ N(0, 1), in networks initialised to keep the signal's scale, so no function "
            "wins by output scale alone; 'raw': the function as it is, with PyTorch's default "
            "init (version 0.1's behaviour)"
        ),
    )

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _validate_proxies(proxies, "proxies")

    @field_validator("objectives")
    @classmethod
    def _unique_objectives(cls, objectives: list[str]) -> list[str]:
        if "accuracy" not in objectives:
            raise ValueError("'accuracy' must be one of the objectives")
        if len(set(objectives)) != len(objectives):
            raise ValueError("an objective is listed twice")
        return objectives

    @model_validator(mode="wrap")
    @classmethod
    def _name_close_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> CampaignSpec:
        """An unknown field's error says which known field it is closest to."""
        try:
            return handler(data)
        except ValidationError as err:
            errors = err.errors()
            if not any(e["type"] == "extra_forbidden" for e in errors):
                raise
            raise ValidationError.from_exception_data(
                err.title, [_with_field_hint(e) for e in errors]
            ) from None

    @model_validator(mode="after")
    def _check_seeds(self) -> CampaignSpec:
        for index, text in enumerate(self.seeds):
            try:
                parse_seed(text, self.space)
            except ValueError as err:
                raise ValueError(f"seeds[{index}] {text!r}: {err}") from None
        return self

    @model_validator(mode="after")
    def _check_rungs_fit(self) -> CampaignSpec:
        """Every rung is a step of every proxy's full run, and not before the quality stage
        (which already judges the run's first ``quality_steps``)."""
        rungs = self.promotion.rungs
        if not rungs:
            return self
        shortest = min(int(p.get("steps", 0)) for p in self.proxies)
        if rungs[-1] > shortest:
            raise ValueError(
                f"promotion.rungs: the last rung ({rungs[-1]}) exceeds the full run: the "
                f"shortest proxy trains {shortest} steps"
            )
        if "quality" in self.rejection.stages and rungs[0] < self.rejection.quality_steps:
            raise ValueError(
                f"promotion.rungs: the first rung ({rungs[0]}) comes before the quality stage's "
                f"{self.rejection.quality_steps} steps; rungs start at or after it"
            )
        return self

    @model_validator(mode="after")
    def _check_fidelity_panel(self) -> CampaignSpec:
        from layerforge.grammar import BUILTINS

        valid = sorted(n for n, g in BUILTINS.items() if g.space == self.space.kind)
        for index, name in enumerate(self.fidelity.panel or []):
            if name not in valid:
                raise ValueError(
                    f"fidelity.panel[{index}]: {name!r} is not a built-in {self.space.kind} "
                    f"layer; valid: {', '.join(valid)}"
                )
        if self.fidelity.panel is not None and len(set(self.fidelity.panel)) != len(
            self.fidelity.panel
        ):
            raise ValueError("fidelity.panel: a layer is listed twice")
        return self


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the spec model that holds the last part of ``loc``."""
    model: Any = CampaignSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _with_field_hint(error: Any) -> Any:
    """One validation error as pydantic reported it, an unknown field's naming its closest
    known fields (the message stays a template of its own ``message``)."""
    from layerforge.grammar.parser import did_you_mean

    message = error["msg"]
    if error["type"] == "extra_forbidden" and error["loc"]:
        fields = _fields_at(error["loc"])
        hint = did_you_mean(str(error["loc"][-1]), fields)
        message = "unknown field" + (
            hint or (f"; the fields here are {', '.join(fields)}" if fields else "")
        )
    return {
        "type": PydanticCustomError(error["type"], "{message}", {"message": message}),
        "loc": error["loc"],
        "input": error.get("input"),
    }


def parse_seed(text: str, space: SpaceSpec):
    """A seed is a built-in layer's name or an expression; return its Graph."""
    from layerforge.grammar import GrammarError, check_static, get_builtin, list_builtins, parse
    from layerforge.grammar.parser import did_you_mean

    try:
        if text in list_builtins(space.kind):
            graph = get_builtin(text)
        else:
            for other in ("activation", "normact"):
                if other != space.kind and text in list_builtins(other):
                    raise ValueError(
                        f"{text!r} is a built-in of the {other} space, not of the "
                        f"{space.kind} space (built-ins here: {', '.join(list_builtins(space.kind))})"
                    )
            try:
                graph = parse(text, space.kind)
            except GrammarError:
                hint = did_you_mean(text, list_builtins(space.kind)) if text.isidentifier() else ""
                if hint:
                    raise ValueError(f"unknown built-in {text!r}{hint}") from None
                raise
        check_static(graph, _seed_space(space))
    except GrammarError as err:
        raise ValueError(str(err)) from None
    return graph


def _seed_space(space: SpaceSpec):
    """Seeds may use any op of the kind and exceed the size limits the search keeps; a space
    that requires a statistic requires it of seeds too."""
    from layerforge.grammar import make_space

    return make_space(
        space.kind,
        ops="full",
        max_nodes=64,
        max_depth=64,
        require_statistic=space.require_statistic,
    )


#: Upper bounds of a proxy's numbers in a spec: (limit, what it bounds). The workers'
#: :class:`~workers.tasks.ProxyTask` checks types and lower bounds (and only refuses what
#: cannot be stored); a campaign may ask only for what one worker can run.
PROXY_LIMITS: dict[str, tuple[float, str]] = {
    "steps": (MAX_STEPS, "training steps of one proxy run"),
    "batch_size": (MAX_BATCH, "one training batch is held in the worker's memory"),
    "eval_batch": (MAX_BATCH, "one evaluation batch is held in the worker's memory"),
    "divergence_check_every": (MAX_STEPS, "as steps"),
    "seed": (MAX_SEED, "a 31-bit seed"),
    "time_limit_s": (MAX_SECONDS, "30 days, the campaign's own limit"),
}


def _proxy_limit_error(task: Any) -> str | None:
    """What is over a spec limit in one checked proxy task (``field: message``), or None."""
    for name, (limit, why) in PROXY_LIMITS.items():
        value = getattr(task, name)
        if value is not None and value > limit:
            return f"{name}: must be <= {limit:,} ({why}), got {value!r}"
    if task.seed < 0:
        return f"seed: must be >= 0, got {task.seed!r}"
    if not isinstance(task.scale, str) and task.scale > MAX_WIDTH:
        return (
            f"scale: a width multiplier must be <= {MAX_WIDTH:g} (the network is held in the "
            f"worker's memory), got {task.scale!r}"
        )
    return None


def _validate_proxies(proxies: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Each proxy checked by the workers' task model, then against the spec's limits and its
    dataset's options (:func:`workers.datasets.validate_dataset_options`, which loads
    nothing); an error names ``where[i].field`` and what is wrong."""
    from layerforge.workers.datasets import validate_dataset_options
    from layerforge.workers.errors import InvalidConfigError, WorkersError
    from layerforge.workers.tasks import ProxyTask

    checked = []
    for index, proxy in enumerate(proxies):
        if isinstance(proxy, dict) and "gain" in proxy:
            raise ValueError(
                f"{where}[{index}].gain: the gain mode is the campaign's, not a proxy's: set "
                "the top-level 'gain' field ('fair' or 'raw')"
            )
        try:
            task = ProxyTask.from_dict(dict(proxy))
            validate_dataset_options(task.dataset, task.dataset_options)
        except InvalidConfigError as err:
            raise ValueError(f"{where}[{index}].{err}") from None
        except (WorkersError, TypeError, ValueError) as err:
            raise ValueError(f"{where}[{index}]: {err}") from None
        over = _proxy_limit_error(task)
        if over is not None:
            raise ValueError(f"{where}[{index}].{over}")
        checked.append({k: v for k, v in task.to_dict().items() if k != "gain"})
    return checked


def validate_spec(data: Any) -> CampaignSpec:
    """Validate a spec given as a dict; raise :class:`SpecError` naming every bad field."""
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(
            [
                (
                    ".".join(str(p) for p in e["loc"]) or "spec",
                    e["msg"].removeprefix("Value error, "),
                )
                for e in err.errors()
            ]
        ) from None


def with_gain(proxies: list[dict[str, Any]], gain: str) -> list[dict[str, Any]]:
    """The proxy dicts a worker receives: each carries the campaign's ``gain`` mode."""
    return [{**p, "gain": gain} for p in proxies]
