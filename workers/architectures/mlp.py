"""Multi-layer perceptron on flattened inputs.

Activation campaigns: ``Linear -> candidate`` per hidden layer (no norm, as in the Swish
search's simple nets). Normact campaigns: ``Linear -> candidate(C)`` on ``(N, C)`` inputs, so
the candidate is the layer's only normalization.

Scale ``"cpu"``: two hidden layers of 128; ``"gpu"``: three hidden layers of 512.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from layerforge.workers.architectures.common import (
    LayerFactory,
    init_weights,
    resolve_scale,
    width,
)


class MLP(nn.Module):
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
        hidden = [128, 128] if small else [width(512, mult)] * 3
        layers: list[nn.Module] = []
        c = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(c, h), factory(h)]
            c = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x.flatten(1)))
