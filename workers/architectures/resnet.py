"""ResNet-20 style network for small images (3 stages of BasicBlocks, widths 16-32-64).

Pre-activation form (He et al. 2016, "Identity Mappings"): each BasicBlock is
``NA -> conv3x3 -> NA -> conv3x3`` plus the shortcut, and the head is ``NA -> pool -> fc``.
Every BatchNorm is followed by an activation, so a normact candidate replaces all of them
(this is how EvoNorm layers are dropped into ResNets).

Scale ``"gpu"``: ResNet-20 (3 blocks per stage, widths 16/32/64); ``"cpu"``: ResNet-8
(1 block per stage, widths 8/16/32).
"""

from __future__ import annotations

import torch
from torch import nn

from layerforge.workers.architectures.common import (
    LayerFactory,
    NormAct,
    image_channels,
    init_weights,
    resolve_scale,
    to_image,
    width,
)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, kind: str, factory: LayerFactory):
        super().__init__()
        self.na1 = NormAct(cin, kind, factory)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.na2 = NormAct(cout, kind, factory)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.na1(x)
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.na2(out))
        return out + short


class ResNet(nn.Module):
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
        widths = [8, 16, 32] if small else [width(w, mult) for w in (16, 32, 64)]
        blocks = 1 if small else 3
        cin = image_channels(input_shape)
        self.stem = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(PreActBlock(c, w, stride, kind, factory))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.head_na = NormAct(c, kind, factory)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(to_image(x)))
        x = self.head_na(x)
        return self.fc(x.mean(dim=(2, 3)))
