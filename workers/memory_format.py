"""Memory format of a proxy's convnet and its batches: NCHW (``contiguous``) or NHWC
(``channels_last``), chosen per architecture, candidate kind and device.

The workers' training loop (:class:`workers.training.Trainer`) converts the model once
(``model.to(memory_format=torch.channels_last)``: the 4-D conv kernels) and each batch as it
is sampled (:class:`workers.datasets.BatchSampler`, ``memory_format=``), never the cached
dataset itself (a second copy of a large dataset would double a worker's memory, and a
single-channel image such as ``digits`` is in both formats at once, so it needs no copy).
Every layer then keeps the format: the convolutions, BatchNorm, the activations and the
grammar-compiled norm-act layers (``F.batch_norm`` / ``F.group_norm`` fast paths, per-channel
and per-group statistics) all return channels-last outputs for channels-last inputs, and they
compute the same values (fp32 rounding aside; ``tests/workers/test_memory_format.py``).

Why batches and not the dataset: the sampler's gather (``index_select``) returns a
contiguous tensor even from a channels-last source, and converting a gathered batch is a
small fraction of a step (nothing for one channel).

Policy (:func:`choose_memory_format`): channels_last for every ``(convnet, kind)`` pair
(:data:`CHANNELS_LAST`) unless the built model has a layer that runs ``F.group_norm`` over
groups or instances (:func:`slow_channels_last_layers`: GN-ReLU, IN-ReLU), which is several
times slower on NHWC; MLPs and transformers have no 4-D activations and stay contiguous. On
CUDA the same models use channels_last (cuDNN's NHWC kernels are the fast ones under bf16
autocast), with the group-norm exclusion kept as the conservative choice. The measurements
behind the policy (steps/s per data set, architecture and layer, both formats) are in
docs/memory_format.md.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from layerforge.workers.errors import InvalidConfigError

__all__ = [
    "CHANNELS_LAST",
    "CONV_ARCHS",
    "MEMORY_FORMATS",
    "SLOW_IN_CHANNELS_LAST",
    "choose_memory_format",
    "convert_batch",
    "convert_model",
    "resolve_memory_format",
    "slow_channels_last_layers",
    "torch_memory_format",
]

#: Names accepted for a memory format, and the torch object each stands for.
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}

#: The architectures whose activations are 4-D (N, C, H, W) images.
CONV_ARCHS = frozenset({"resnet", "mobilenetv2", "efficientnet"})

#: ``(arch, kind)`` pairs that train in channels_last on CPU (decided from the measurements in
#: docs/memory_format.md).
CHANNELS_LAST: frozenset[tuple[str, str]] = frozenset(
    (arch, kind) for arch in CONV_ARCHS for kind in ("activation", "normact")
)


def torch_memory_format(name: str) -> torch.memory_format:
    """The ``torch.memory_format`` called ``name`` (``contiguous`` or ``channels_last``)."""
    try:
        return MEMORY_FORMATS[name]
    except KeyError:
        raise InvalidConfigError(
            "memory_format",
            f"must be 'auto', {', '.join(repr(k) for k in MEMORY_FORMATS)}, got {name!r}",
        ) from None


#: torch modules that run slower on NHWC than on NCHW on CPU (see the module docstring).
SLOW_IN_CHANNELS_LAST: tuple[type[nn.Module], ...] = (
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
# a generated forward line ``tN = _group_norm(x, 'group' | 'instance', ...)``
_GROUP_NORM_CALL = re.compile(r"=\s*_group_norm\([^,()]+,\s*['\"](?:group|instance)['\"]")


def slow_channels_last_layers(model: nn.Module) -> list[str]:
    """Names of the submodules of ``model`` that make it slower in channels_last on CPU.

    ``F.group_norm`` with more than one group (group and instance statistics) runs several
    times slower on an NHWC input than on NCHW, enough to lose the convolutions' gain
    (docs/memory_format.md): ``nn.GroupNorm``, the instance
    norms (:data:`SLOW_IN_CHANNELS_LAST`) and the grammar-compiled norm-act layers whose
    generated forward calls the ``_group_norm`` fast path over ``group`` or ``instance`` axes
    (``(x - mean(x, group)) / std(x, group)``...; the class's ``source`` attribute is the code
    it runs). Layer statistics (one group), batch statistics (``F.batch_norm``) and the
    grammar's own ``_stat`` reductions (EvoNorm-B0/B1's instance std / rms, EvoNorm-S0/S1's
    group std) are not in the list: in a model, they do not lose.
    """
    names = []
    for name, module in model.named_modules():
        source = getattr(type(module), "source", None)
        if isinstance(module, SLOW_IN_CHANNELS_LAST) or (
            isinstance(source, str) and _GROUP_NORM_CALL.search(source)
        ):
            names.append(name)
    return names


def choose_memory_format(
    arch: str,
    kind: str | None,
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
) -> str:
    """The memory format the workers train ``arch`` in: ``"channels_last"`` or ``"contiguous"``.

    Convnets only (:data:`CONV_ARCHS`): on CPU the ``(arch, kind)`` pairs of
    :data:`CHANNELS_LAST` (``kind=None``: only an arch that is channels_last for every kind),
    on CUDA every convnet; in both cases contiguous when ``model`` (the built network, with
    its candidate layers) has a layer of :func:`slow_channels_last_layers`.
    """
    if arch not in CONV_ARCHS:
        return "contiguous"
    if torch.device(device).type != "cuda":
        kinds = ("activation", "normact") if kind is None else (kind,)
        if not all((arch, k) in CHANNELS_LAST for k in kinds):
            return "contiguous"
    if model is not None and slow_channels_last_layers(model):
        return "contiguous"
    return "channels_last"


def resolve_memory_format(
    memory_format: str | torch.memory_format | None,
    arch: str,
    kind: str | None,
    device: str | torch.device = "cpu",
    model: nn.Module | None = None,
) -> str:
    """``"auto"`` (or ``None``) -> :func:`choose_memory_format`; a name or a
    ``torch.memory_format`` -> its name (``InvalidConfigError`` for anything else)."""
    if memory_format is None or memory_format == "auto":
        return choose_memory_format(arch, kind, device, model)
    if isinstance(memory_format, torch.memory_format):
        for name, fmt in MEMORY_FORMATS.items():
            if fmt == memory_format:
                return name
        raise InvalidConfigError("memory_format", f"unsupported memory format {memory_format}")
    torch_memory_format(str(memory_format))
    return str(memory_format)


def convert_model(model: nn.Module, memory_format: str) -> nn.Module:
    """``model`` (in place, as ``Module.to`` does) with its 4-D tensors in ``memory_format``.

    The parameters stay the same ``Parameter`` objects (an optimizer built before or after
    sees the same tensors)."""
    if memory_format == "contiguous":
        return model
    return model.to(memory_format=torch_memory_format(memory_format))


def convert_batch(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """``x`` in ``memory_format`` when it is a 4-D batch (a no-op when it already is, e.g. any
    single-channel image); other tensors are returned as they are."""
    if memory_format == "contiguous" or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch_memory_format(memory_format))
