"""The rejection protocol's settings: stage names and one config model with every default.

:class:`RejectionSettings` holds what a campaign may set (the stages to run and every
threshold); ``search.spec.RejectionSpec`` is that model, so the spec and the workers share
one set of defaults and bounds. :class:`RejectionConfig` adds what the controller decides for
each job (the static check's space, the time limit, cost measurement) and may
list the ``full`` evaluation among its stages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from layerforge.workers.errors import InvalidConfigError, UnknownNameError

__all__ = [
    "REJECTION_STAGES",
    "STAGES",
    "RejectionConfig",
    "RejectionSettings",
    "Stage",
]


class Stage(StrEnum):
    """The protocol's stages, in the order they run (cheap to expensive)."""

    STATIC = "static"
    PROBE = "probe"
    DUPLICATE = "duplicate"
    STABILITY = "stability"
    TRAINABILITY = "trainability"
    QUALITY = "quality"
    DEPTH = "depth"
    FULL = "full"


#: Every stage, in order.
STAGES: tuple[Stage, ...] = tuple(Stage)
#: The stages that can reject a candidate before its full evaluation (what a spec lists).
REJECTION_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s is not Stage.FULL)

#: A count of steps, a batch or a size: at least 1, and a bigger number than this is a typo.
Count = Annotated[int, Field(ge=1, le=1_000_000)]


class RejectionSettings(BaseModel):
    """The stages a campaign runs and every threshold of the rejection protocol.

    Unknown settings and bad values are errors naming the setting; Infinity and NaN are
    refused (a spec holding one could not be stored as JSON).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    #: Whether ``stages`` may name the full evaluation (the workers' job config may).
    allows_full: ClassVar[bool] = False

    stages: list[Stage] = Field(
        default_factory=lambda: list(REJECTION_STAGES),
        description="rejection stages to run (their order is fixed: "
        + ", ".join(REJECTION_STAGES)
        + ")",
    )
    # probe
    probe_batch: Count = Field(16, description="batch of each probe tensor")
    probe_channels: Count = Field(8, description="channels of each probe tensor")
    probe_size: Count = Field(6, description="spatial size of each probe tensor")
    probe_scales: list[float] = Field(
        default_factory=lambda: [1.0, 10.0],
        min_length=1,
        description="standard deviations of the probe inputs (the smallest is checked for "
        "constant output, zero gradient and magnitudes)",
    )
    probe_max_output: float = Field(1e4, gt=0, description="largest |output| on unit inputs")
    probe_max_grad: float = Field(1e4, gt=0, description="largest |input gradient| on unit inputs")
    probe_min_range: float = Field(
        1e-6, ge=0, description="an output varying less than this (relative) is constant"
    )
    probe_min_nonlinearity: float = Field(
        1e-4,
        ge=0,
        description="normact: reject a layer whose output is an affine function of its input "
        "(relative deviation from affinity under this, at the initial and at random parameter "
        "values): every proxy network built from it is linear; 0 turns the check off",
    )
    # stability
    stability_steps: Count = Field(5, description="adversarial steps on the weights")
    stability_step_size: float = Field(
        0.1, gt=0, description="each weight tensor moves by this times its own norm per step"
    )
    stability_max_grad_norm: float = Field(
        1e3, gt=0, description="reject when the weights' gradient norm can be driven above this"
    )
    stability_batch: Count = Field(16, description="batch of the stability network")
    stability_slope_near: float = Field(
        4.0,
        gt=0,
        le=1e4,
        description="activations: the range |x| <= this where unit-variance pre-activations live",
    )
    stability_slope_far: float = Field(
        64.0,
        gt=0,
        le=1e4,
        description="activations: the wider range |x| <= this that growing weights reach",
    )
    stability_max_slope_growth: float = Field(
        1.5,
        ge=1.0,
        description="activations: reject when the largest slope over the far range exceeds the "
        "largest over the near range by more than this factor",
    )
    # trainability
    trainability_steps: Count = Field(
        10,
        description="first training steps of each proxy run, the loss read after each (NaN: reject)",
    )
    trainability_min_logit_spread: float = Field(
        1e-3,
        ge=0.0,
        description="reject when the proxy network's logits at initialisation vary less than this "
        "(std across a batch): its output ignores its input",
    )
    trainability_max_logit: float = Field(
        1e3,
        gt=0,
        description="reject when the mean |logit| at initialisation exceeds this: the signal explodes",
    )
    # quality
    quality_steps: Count = Field(100, description="steps of the quality check")
    quality_min_accuracy: float = Field(
        0.2, ge=0.0, le=1.0, description="reject under this validation accuracy on any proxy"
    )

    # depth
    depth_layers: int = Field(
        6,
        ge=1,
        le=64,
        description="activations: hidden layers of the depth probe's MLP",
    )
    depth_width: Count = Field(128, description="activations: units per hidden layer of the probe")
    depth_steps: Count = Field(
        100,
        description="activations: training steps of the probe (the first proxy's schedule, "
        "data and seed; a NaN/Inf loss rejects)",
    )

    @field_validator("stages", mode="after")
    @classmethod
    def _stages_in_order(cls, stages: list[Stage]) -> list[Stage]:
        if Stage.FULL in stages and not cls.allows_full:
            raise ValueError(
                "'full' is the full evaluation that always follows the rejection stages; "
                f"list only rejection stages ({', '.join(REJECTION_STAGES)})"
            )
        return [s for s in STAGES if s in stages]  # fixed order, no repeats

    @model_validator(mode="after")
    def _slope_ranges_nested(self) -> RejectionSettings:
        if self.stability_slope_far <= self.stability_slope_near:
            raise ValueError(
                f"stability_slope_far ({self.stability_slope_far:g}) must exceed "
                f"stability_slope_near ({self.stability_slope_near:g})"
            )
        return self

    @field_validator(
        "probe_batch",
        "probe_channels",
        "probe_size",
        "stability_steps",
        "stability_batch",
        "depth_layers",
        "depth_width",
        "depth_steps",
        "trainability_steps",
        "quality_steps",
        mode="before",
    )
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer, got {value!r}")
        return value


class RejectionConfig(RejectionSettings):
    """One evaluation job's protocol: the campaign's settings plus the controller's choices.

    ``stages`` defaults to every stage including ``full`` (the whole evaluation); the static
    check's ``space`` is ``make_space(kind, **space)``; ``time_limit_s`` bounds the whole job; ``measure_costs`` times the
    layer against its baseline on a ``cost_shape`` tensor.
    """

    allows_full: ClassVar[bool] = True

    stages: list[Stage] = Field(default_factory=lambda: list(STAGES))
    space: dict[str, Any] = Field(default_factory=dict)
    time_limit_s: float | None = Field(None, gt=0)
    measure_costs: bool = True
    cost_shape: list[int] = Field(
        default_factory=lambda: [64, 32, 16, 16], min_length=2, max_length=4
    )
    cost_repeats: Count = 5

    @field_validator("cost_shape", mode="after")
    @classmethod
    def _positive_shape(cls, shape: list[int]) -> list[int]:
        if not all(s >= 1 for s in shape):
            raise ValueError(f"must be 2-4 positive integers, got {shape!r}")
        return shape

    @classmethod
    def from_dict(cls, data: Any) -> RejectionConfig:
        """Validate a job's config (None: the defaults); errors name the bad setting.

        Raises :class:`UnknownNameError` for an unknown stage and :class:`InvalidConfigError`
        (whose ``field`` names the setting) for anything else.
        """
        if data is None:
            return cls()
        if isinstance(data, RejectionConfig):
            return data
        if not isinstance(data, dict):
            raise InvalidConfigError("rejection", f"must be an object, got {type(data).__name__}")
        stages = data.get("stages")
        if isinstance(stages, (list, tuple)):
            for name in stages:
                if isinstance(name, str) and name not in STAGES:
                    raise UnknownNameError("stage", name, STAGES)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "rejection"
            if first["type"] == "extra_forbidden":
                valid = ", ".join(sorted(cls.model_fields))
                raise InvalidConfigError(
                    field, f"unknown rejection setting; valid settings: {valid}"
                ) from None
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidConfigError(field, f"{message}, got {first.get('input')!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (stage names as strings), which :meth:`from_dict` reads back."""
        return self.model_dump(mode="json")
