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
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from layerforge.workers.rejection.config import RejectionSettings

STRATEGIES = ("evolution", "nsga2", "random", "optuna")
OBJECTIVES = ("accuracy", "runtime", "nodes", "params")


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
                self.kind, ops=self.ops, max_nodes=self.max_nodes, max_depth=self.max_depth
            )
        except GrammarError as err:
            raise ValueError(str(err)) from None


class StrategySpec(_Strict):
    """Which strategy proposes candidates, and its settings."""

    name: Literal["evolution", "nsga2", "random", "optuna"] = "evolution"
    population: int = Field(64, ge=2, le=100_000, description="population size (with aging)")
    tournament: int = Field(8, ge=1, le=100_000, description="sample size of a tournament")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="optuna's sampler")
    max_attempts: int = Field(
        48, ge=1, le=100_000, description="mutations tried per proposal before a random graph"
    )

    @model_validator(mode="after")
    def _tournament_fits(self) -> StrategySpec:
        if self.tournament > self.population:
            raise ValueError(
                f"tournament ({self.tournament}) cannot exceed population ({self.population})"
            )
        return self


class RejectionSpec(RejectionSettings):
    """The rejection protocol's stages and thresholds: the workers' own settings model
    (:class:`workers.rejection.RejectionSettings`), so every default and bound exists once."""


class BudgetSpec(_Strict):
    """When the campaign stops: after this many candidates or this many seconds."""

    max_candidates: int = Field(500, ge=1, le=10_000_000)
    max_seconds: float = Field(3600.0, gt=0)


class TransferSpec(_Strict):
    """Re-evaluate the top K on held-out proxies with several seeds when the search ends."""

    top_k: int = Field(0, ge=0, le=1000, description="0 switches the transfer stage off")
    seeds: int = Field(3, ge=1, le=100)
    proxies: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _validate_proxies(proxies)


class CampaignSpec(_Strict):
    """A whole campaign, as a user submits it."""

    name: str = Field("campaign", min_length=1, max_length=200)
    space: SpaceSpec
    seeds: list[str] = Field(default_factory=list, max_length=1000)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    proxies: list[dict[str, Any]] = Field(min_length=1, max_length=32)
    objectives: list[Literal["accuracy", "runtime", "nodes", "params"]] = Field(
        default_factory=lambda: ["accuracy"],  # type: ignore[arg-type]  # pydantic validates
        min_length=1,
    )
    rejection: RejectionSpec = Field(default_factory=RejectionSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    transfer: TransferSpec = Field(default_factory=TransferSpec)
    parallelism: int = Field(4, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _validate_proxies(proxies)

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
    """Seeds may use any op of the kind and exceed the size limits the search keeps."""
    from layerforge.grammar import make_space

    return make_space(space.kind, ops="full", max_nodes=64, max_depth=64)


def _validate_proxies(proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from layerforge.workers.errors import WorkersError
    from layerforge.workers.tasks import ProxyTask

    checked = []
    for index, proxy in enumerate(proxies):
        try:
            checked.append(ProxyTask.from_dict(dict(proxy)).to_dict())
        except (WorkersError, TypeError, ValueError) as err:
            raise ValueError(f"proxies[{index}]: {err}") from None
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
