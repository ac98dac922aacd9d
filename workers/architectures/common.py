"""Shared pieces of the proxy architectures: where a candidate layer goes, and scaling.

Placement rule (the same in every family):

- ``kind="activation"``: the candidate replaces every activation; every normalization stays
  BatchNorm. A ``conv -> BN -> act`` site becomes ``conv -> BN -> candidate(C)``.
- ``kind="normact"``: the candidate replaces every normalization+activation pair, so a
  ``conv -> BN -> act`` site becomes ``conv -> candidate(C)`` (the candidate carries its own
  per-channel affine). Normalizations that have no activation after them (the linear
  bottleneck projection of MobileNetV2/EfficientNet) stay BatchNorm; activations with no
  normalization before them (the squeeze-excite bottleneck) stay fixed (SiLU).

``scale``: ``"cpu"`` is a small test-size network (narrow, shallow) that trains in seconds on
one core; ``"gpu"`` is the full proxy size (``1.0``); a float multiplies the GPU widths and
keeps the GPU depth.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from workers.errors import InvalidConfigError

LayerFactory = Callable[[int], nn.Module]
KINDS = ("activation", "normact")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidConfigError(
            "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}"
        )
    return kind


def resolve_scale(scale: str | float) -> tuple[bool, float]:
    """Return ``(small, width_multiplier)``: ``small`` is True for the CPU test size."""
    if scale == "cpu":
        return True, 1.0
    if scale == "gpu":
        return False, 1.0
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return False, float(scale)
    raise InvalidConfigError(
        "scale", f"must be 'cpu', 'gpu' or a positive number, got {scale!r}"
    )


def width(base: int, mult: float, minimum: int = 4, divisor: int = 4) -> int:
    w = max(minimum, int(base * mult + divisor / 2) // divisor * divisor)
    return w


class NormAct(nn.Module):
    """One ``norm -> activation`` site: BN + candidate, or the candidate alone (normact)."""

    def __init__(self, channels: int, kind: str, factory: LayerFactory, dims: int = 2):
        super().__init__()
        if kind == "activation":
            bn = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
            self.layer = nn.Sequential(bn, factory(channels))
        else:
            self.layer = factory(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def act_only(channels: int, kind: str, factory: LayerFactory) -> nn.Module:
    """An activation with no norm before it: the candidate (activation) or SiLU (normact)."""
    return factory(channels) if kind == "activation" else nn.SiLU()


def to_image(x: torch.Tensor) -> torch.Tensor:
    """View vectors ``(N, L)`` as ``(N, 1, 1, L)`` and sequences ``(N, C, L)`` as ``(N, C, 1, L)``."""
    if x.dim() == 2:
        return x[:, None, None, :]
    if x.dim() == 3:
        return x[:, :, None, :]
    return x


def image_channels(input_shape: tuple[int, ...]) -> int:
    return 1 if len(input_shape) == 1 else int(input_shape[0])


def conv_bn(
    cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=5**0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
