"""Proxy architectures, each built from a layer factory (see :mod:`.common` for placement).

``build_model(arch, *, input_shape, num_classes, kind, layer_factory, scale)`` returns an
``nn.Module`` mapping a batch of inputs of ``input_shape`` to ``num_classes`` logits. Every
family accepts every input modality: vectors and sequences are viewed as ``1 x L`` images by
the convnets, images are read row by row by the transformer, everything is flattened by the
MLP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from layerforge.workers.architectures.common import KINDS, LayerFactory, check_kind, resolve_scale
from layerforge.workers.architectures.efficientnet import EfficientNet
from layerforge.workers.architectures.mlp import MLP
from layerforge.workers.architectures.mobilenetv2 import MobileNetV2
from layerforge.workers.architectures.resnet import ResNet
from layerforge.workers.architectures.transformer import Transformer
from layerforge.workers.errors import InvalidConfigError, UnknownNameError

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet": ResNet,
    "mobilenetv2": MobileNetV2,
    "efficientnet": EfficientNet,
    "mlp": MLP,
    "transformer": Transformer,
}

__all__ = ["ARCHITECTURES", "KINDS", "LayerFactory", "build_model"]


def build_model(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    kind: str,
    layer_factory: LayerFactory,
    scale: str | float = "cpu",
) -> nn.Module:
    """Build proxy ``arch`` with the candidate from ``layer_factory`` placed per ``kind``."""
    if arch not in ARCHITECTURES:
        raise UnknownNameError("architecture", arch, ARCHITECTURES)
    check_kind(kind)
    resolve_scale(scale)
    if int(num_classes) < 2:
        raise InvalidConfigError("num_classes", f"must be >= 2, got {num_classes}")
    return ARCHITECTURES[arch](
        tuple(int(s) for s in input_shape), int(num_classes), kind, layer_factory, scale
    )
