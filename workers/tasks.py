"""``ProxyTask``: one architecture x one dataset x one training budget.

A campaign's ``proxies`` list holds dicts of this shape; only ``arch`` and ``dataset`` are
required, or a ``preset`` name (:mod:`workers.presets`) that supplies them. ``from_dict`` rejects unknown fields and bad values with an
:class:`~workers.errors.InvalidConfigError` whose message names the field, and an unknown
architecture or dataset with an :class:`~workers.errors.UnknownNameError` naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from layerforge.workers.errors import InvalidConfigError, UnknownNameError
from layerforge.workers.presets import expand_preset

# Upper bound of steps, batch sizes and check intervals: a bigger number is a typo, and one
# past 2**63 cannot even be stored (PostgreSQL's JSON keeps it, torch's indexing does not).
MAX_COUNT = 1_000_000_000
GAIN_MODES = ("fair", "raw")

__all__ = ["ProxyTask"]


def _number(name: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidConfigError(name, f"must be a number, got {value!r}")
    if integer and int(value) != value:
        raise InvalidConfigError(name, f"must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise InvalidConfigError(name, f"must be finite, got {value!r}")
    return value


@dataclass
class ProxyTask:
    arch: str
    dataset: str
    steps: int = 300
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    seed: int = 0
    scale: str | float = "cpu"
    eval_batch: int = 1024
    augment: bool = True
    divergence_check_every: int = 10
    time_limit_s: float | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    # "fair": the candidate activation trains as f / gamma_f in a network initialised to keep
    # the signal's second moment (see workers.gain); "raw": f and PyTorch's default init
    gain: str = "fair"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def name(self) -> str:
        return f"{self.arch}/{self.dataset}"

    def validate(self) -> None:
        from layerforge.workers.architectures import ARCHITECTURES
        from layerforge.workers.datasets import DATASETS

        if self.arch not in ARCHITECTURES:
            raise UnknownNameError("architecture", self.arch, ARCHITECTURES)
        if self.dataset not in DATASETS:
            raise UnknownNameError("dataset", self.dataset, DATASETS)
        for name in ("steps", "batch_size", "eval_batch", "divergence_check_every"):
            if not 1 <= _number(name, getattr(self, name), integer=True) <= MAX_COUNT:
                raise InvalidConfigError(
                    name, f"must be >= 1 and <= {MAX_COUNT}, got {getattr(self, name)!r}"
                )
            setattr(self, name, int(getattr(self, name)))
        _number("seed", self.seed, integer=True)
        self.seed = int(self.seed)
        if _number("lr", self.lr) <= 0:
            raise InvalidConfigError("lr", f"must be > 0, got {self.lr!r}")
        for name in ("momentum", "warmup_fraction", "label_smoothing"):
            v = _number(name, getattr(self, name))
            if not 0 <= v < 1:
                raise InvalidConfigError(name, f"must be in [0, 1), got {v!r}")
        if _number("weight_decay", self.weight_decay) < 0:
            raise InvalidConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        for name in ("nesterov", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidConfigError(
                    name, f"must be true or false, got {getattr(self, name)!r}"
                )
        if self.nesterov and self.momentum == 0:
            raise InvalidConfigError("nesterov", "Nesterov momentum needs momentum > 0")
        if self.time_limit_s is not None and _number("time_limit_s", self.time_limit_s) <= 0:
            raise InvalidConfigError("time_limit_s", f"must be > 0, got {self.time_limit_s!r}")
        if not isinstance(self.dataset_options, dict):
            raise InvalidConfigError("dataset_options", "must be an object")
        if self.gain not in GAIN_MODES:
            raise InvalidConfigError(
                "gain", f"must be one of {', '.join(GAIN_MODES)}, got {self.gain!r}"
            )
        from layerforge.workers.architectures.common import resolve_scale

        resolve_scale(self.scale)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyTask:
        """The task a proxy dict describes (a ``preset`` name expands to the settings of
        :data:`workers.presets.PROXY_PRESETS` first, the dict's own fields overriding them);
        an unknown field or bad value raises an error naming it."""
        if isinstance(data, ProxyTask):
            return data
        if not isinstance(data, dict):
            raise InvalidConfigError("proxy", f"must be an object, got {type(data).__name__}")
        data = expand_preset(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidConfigError(
                unknown[0], f"unknown field; valid fields: {', '.join(sorted(names))}"
            )
        for required in ("arch", "dataset"):
            if required not in data:
                raise InvalidConfigError(required, "is required")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dataset_options"] = dict(self.dataset_options)
        return d

    def replace(self, **changes: Any) -> ProxyTask:
        return dataclasses.replace(self, **changes)
