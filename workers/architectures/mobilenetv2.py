"""MobileNetV2 for small images: inverted residuals with depthwise convolutions.

Block: ``1x1 expand -> NA -> 3x3 depthwise -> NA -> 1x1 project -> BN`` (linear bottleneck,
so the projection's BN has no activation and stays BN in normact campaigns), residual when
the shape allows. Stem ``conv3x3 -> NA``, head ``1x1 conv -> NA -> pool -> fc``.

Scale ``"gpu"``: the CIFAR variant of the MobileNetV2 table (strides adapted to 32x32);
``"cpu"``: three blocks, widths 8-16, head 64.
"""

from __future__ import annotations

from torch import nn

from layerforge.workers.architectures.common import (
    InvertedBottleneck,
    LayerFactory,
    MobileSkeleton,
    NormAct,
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


class InvertedResidual(InvertedBottleneck):
    def __init__(self, cin: int, cout: int, stride: int, t: int, kind: str, factory: LayerFactory):
        def middle(hidden: int) -> list[nn.Module]:
            return [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                NormAct(hidden, kind, factory),
            ]

        super().__init__(cin, cout, stride, t, kind, factory, middle)


class MobileNetV2(MobileSkeleton):
    """MobileNetV2 on small images (the block table of the module docstring)."""

    cpu_config = CPU_CONFIG
    gpu_config = GPU_CONFIG
    block = InvertedResidual
