"""EfficientNet-B0 style network for small images: MBConv blocks with squeeze-excite.

MBConv: ``1x1 expand -> NA -> depthwise kxk -> NA -> SE -> 1x1 project -> BN`` (+ residual).
Squeeze-excite: ``pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate``; its act is the
candidate in activation campaigns and SiLU in normact campaigns (there is no norm before it);
the sigmoid gate is never replaced.

Scale ``"gpu"``: the B0 table with strides adapted to 32x32 inputs; ``"cpu"``: three blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.architectures.common import (
    LayerFactory,
    NormAct,
    act_only,
    conv_bn,
    image_channels,
    init_weights,
    resolve_scale,
    to_image,
    width,
)

# (expansion, channels, repeats, stride, kernel)
GPU_CONFIG = [
    (1, 16, 1, 1, 3),
    (6, 24, 2, 1, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
]
CPU_CONFIG = [(1, 8, 1, 1, 3), (4, 12, 1, 2, 3), (4, 16, 1, 2, 3)]


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, kind: str, factory: LayerFactory):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act_only(reduced, kind, factory)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, t, k, kind: str, factory: LayerFactory):
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [
                nn.Conv2d(cin, hidden, 1, bias=False),
                NormAct(hidden, kind, factory),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
            NormAct(hidden, kind, factory),
            SqueezeExcite(hidden, max(1, cin // 4), kind, factory),
            *conv_bn(hidden, cout, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class EfficientNet(nn.Module):
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
        for t, ch, n, s, k in config:
            out = ch if small else width(ch, mult)
            for i in range(n):
                blocks.append(MBConv(c, out, s if i == 0 else 1, t, k, kind, factory))
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
