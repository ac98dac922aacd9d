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

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn

from layerforge.workers.errors import InvalidConfigError

LayerFactory = Callable[[int], nn.Module]
KINDS = ("activation", "normact")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidConfigError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def resolve_scale(scale: str | float) -> tuple[bool, float]:
    """Return ``(small, width_multiplier)``: ``small`` is True for the CPU test size."""
    if scale == "cpu":
        return True, 1.0
    if scale == "gpu":
        return False, 1.0
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        return False, float(scale)
    raise InvalidConfigError("scale", f"must be 'cpu', 'gpu' or a positive number, got {scale!r}")


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


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
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


class InvertedBottleneck(nn.Module):
    """``[1x1 expand -> NA] -> middle -> 1x1 project -> BN``, residual when the shape allows.

    The expansion is left out when ``t == 1``; the projection is a linear bottleneck (its BN
    has no activation, so it stays BN in normact campaigns). ``middle(hidden)`` returns the
    family's own depthwise part (MobileNetV2's inverted residual, EfficientNet's MBConv).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        t: int,
        kind: str,
        factory: LayerFactory,
        middle: Callable[[int], list[nn.Module]],
    ):
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [
                nn.Conv2d(cin, hidden, 1, bias=False),
                NormAct(hidden, kind, factory),
            ]
        layers += [*middle(hidden), *conv_bn(hidden, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileSkeleton(nn.Module):
    """The network shared by MobileNetV2 and EfficientNet: stem ``conv3x3 -> NA``, the block
    table, head ``1x1 conv -> NA -> pool -> fc``.

    A family sets the class attributes ``cpu_config``/``gpu_config`` (rows ``(t, channels,
    repeats, stride, *extra)``) and ``block``: a row's blocks are ``block(cin, cout, stride,
    t, *extra, kind, factory)``, the first with the row's stride and the rest with stride 1. Scale ``"cpu"``: stem 8, head 64, the table's
    widths as written; otherwise stem 32, head 1280 and the widths times the multiplier (the
    head never below 1280).
    """

    cpu_config: ClassVar[Sequence[tuple[int, ...]]]
    gpu_config: ClassVar[Sequence[tuple[int, ...]]]
    block: ClassVar[Callable[..., nn.Module]]

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        kind: str,
        factory: LayerFactory,
        scale: str | float = "cpu",
    ):
        super().__init__()
        small, mult = resolve_scale(scale)
        config = self.cpu_config if small else self.gpu_config
        stem = 8 if small else width(32, mult)
        head = 64 if small else width(1280, max(1.0, mult))
        self.stem = nn.Sequential(
            nn.Conv2d(image_channels(input_shape), stem, 3, 1, 1, bias=False),
            NormAct(stem, kind, factory),
        )
        blocks: list[nn.Module] = []
        c = stem
        for t, ch, n, s, *extra in config:
            out = ch if small else width(ch, mult)
            for i in range(n):
                blocks.append(self.block(c, out, s if i == 0 else 1, t, *extra, kind, factory))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c, head, 1, bias=False), NormAct(head, kind, factory))
        self.fc = nn.Linear(head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(to_image(x))))
        return self.fc(x.mean(dim=(2, 3)))
