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

from layerforge.workers.architectures.common import (
    InvertedBottleneck,
    LayerFactory,
    MobileSkeleton,
    NormAct,
    act_only,
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


class MBConv(InvertedBottleneck):
    def __init__(self, cin, cout, stride, t, k, kind: str, factory: LayerFactory):
        def middle(hidden: int) -> list[nn.Module]:
            return [
                nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
                NormAct(hidden, kind, factory),
                SqueezeExcite(hidden, max(1, cin // 4), kind, factory),
            ]

        super().__init__(cin, cout, stride, t, kind, factory, middle)


class EfficientNet(MobileSkeleton):
    """EfficientNet-B0 style network on small images (the block table of the module docstring)."""

    cpu_config = CPU_CONFIG
    gpu_config = GPU_CONFIG
    block = MBConv
