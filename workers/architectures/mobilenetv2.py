"""MobileNetV2 for small images: inverted residuals with depthwise convolutions.

Block: ``1x1 expand -> NA -> 3x3 depthwise -> NA -> 1x1 project -> BN`` (linear bottleneck,
so the projection's BN has no activation and stays BN in normact campaigns), residual when
the shape allows. Stem ``conv3x3 -> NA``, head ``1x1 conv -> NA -> pool -> fc``.

Scale ``"gpu"``: the CIFAR variant of the MobileNetV2 table (strides adapted to 32x32);
``"cpu"``: three blocks, widths 8-16, head 64.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.architectures.common import (
    LayerFactory,
    NormAct,
    conv_bn,
    image_channels,
    init_weights,
    resolve_scale,
    to_image,
    width,
)

# (expansion t, channels c, repeats n, stride s)
GPU_CONFIG = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
CPU_CONFIG = [(1, 8, 1, 1), (4, 12, 1, 2), (4, 16, 1, 2)]


class InvertedResidual(nn.Module):
    def __init__(
        self, cin: int, cout: int, stride: int, t: int, kind: str, factory: LayerFactory
    ):
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [
                nn.Conv2d(cin, hidden, 1, bias=False),
                NormAct(hidden, kind, factory),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            NormAct(hidden, kind, factory),
            *conv_bn(hidden, cout, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
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
        config = CPU_CONFIG if small else GPU_CONFIG
        stem = 8 if small else width(32, mult)
        head = 64 if small else width(1280, max(1.0, mult))
        self.stem = nn.Sequential(
            nn.Conv2d(image_channels(input_shape), stem, 3, 1, 1, bias=False),
            NormAct(stem, kind, factory),
        )
        blocks: list[nn.Module] = []
        c = stem
        for t, ch, n, s in config:
            out = ch if small else width(ch, mult)
            for i in range(n):
                blocks.append(
                    InvertedResidual(c, out, s if i == 0 else 1, t, kind, factory)
                )
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(c, head, 1, bias=False), NormAct(head, kind, factory)
        )
        self.fc = nn.Linear(head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(to_image(x))))
        return self.fc(x.mean(dim=(2, 3)))
