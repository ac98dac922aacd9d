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

Why batches and not the dataset: ``index_select`` (the sampler's gather) returns a contiguous
tensor even from a channels-last source (and takes twice as long on one); ``x[idx]`` keeps the
format but is ~1.8x slower than ``index_select``; converting each gathered 128x3x32x32 batch
costs ~1 ms on one CPU thread, under 1% of such a step, and nothing for one channel.

Measured (the policy's basis): steps/s of ``make_trainer(...).run_until`` on CPU at one torch
thread (an evaluator actor reserves one CPU), batch 128, fp32, ``scale="cpu"``, contiguous
(NCHW) vs channels_last (NHWC), the two trainers run in interleaved chunks of ~0.6 s in one
process (A/B/B/A...), ratio = median of 5-9 per-pair ratios (min-max in brackets; "other runs"
are repeats of the whole measurement). "digits" is ``1x8x8``, "synthetic" is ``synthetic`` at
``3x32x32`` (CIFAR-shaped). The machine was shared with another job during the study, so the
absolute steps/s are low and move by ~5-10%; the ratios are of pairs run back to back.

    =========  ============  ==========  ======  ======  ================  ============
    data       arch          layer       NCHW    NHWC    NHWC/NCHW         other runs
    =========  ============  ==========  ======  ======  ================  ============
    digits     resnet        relu          40.3    47.8  1.19 (1.17-1.24)
    digits     resnet        silu          37.5    41.3  1.13 (1.10-1.19)
    digits     resnet        bn_relu       36.0    40.4  1.08 (0.98-1.20)  1.08
    digits     resnet        evonorm_b0    24.2    19.7  0.93 (0.78-1.11)  1.11, 1.14
    digits     resnet        evonorm_b1    21.1    17.6  0.87 (0.83-1.07)  1.05
    digits     resnet        evonorm_s0    29.2    31.2  1.05 (0.95-1.15)  1.08, 1.08
    digits     resnet        evonorm_s1    28.9    31.1  1.10 (1.06-1.12)  1.11
    digits     resnet        ln_relu       39.6    42.7  1.08 (1.04-1.79)
    digits     resnet        gn_relu       34.5    16.6  0.63 (0.39-0.80)
    digits     resnet        in_relu       39.3    25.7  0.65 (0.51-0.69)
    digits     mobilenetv2   relu          32.6    50.2  1.58 (1.50-1.67)
    digits     mobilenetv2   silu          29.4    42.0  1.47 (1.17-1.57)
    digits     mobilenetv2   bn_relu       30.6    47.6  1.41 (1.40-1.96)
    digits     mobilenetv2   evonorm_b0    17.4    24.8  1.31 (1.29-1.58)  1.29
    digits     mobilenetv2   evonorm_b1    19.4    21.7  1.11 (1.09-1.24)
    digits     mobilenetv2   evonorm_s0    23.5    25.5  1.09 (0.68-1.12)  1.08
    digits     mobilenetv2   evonorm_s1    25.6    24.8  0.98 (0.80-1.08)
    digits     mobilenetv2   ln_relu       37.1    49.0  1.34 (1.05-1.38)
    digits     mobilenetv2   gn_relu       31.1    16.4  0.51 (0.36-0.74)
    digits     mobilenetv2   in_relu       22.2    10.7  0.50 (0.33-0.54)
    digits     efficientnet  relu          28.2    43.1  1.39 (1.32-1.77)
    digits     efficientnet  silu          26.6    35.7  1.38 (1.25-1.54)
    digits     efficientnet  bn_relu       29.4    41.8  1.41 (1.36-1.74)
    digits     efficientnet  evonorm_b0    18.5    23.9  1.29 (1.26-1.34)  1.26
    digits     efficientnet  evonorm_b1    15.2    17.8  1.24 (0.97-1.45)
    digits     efficientnet  evonorm_s0    21.3    23.9  1.15 (0.99-1.21)  1.10
    digits     efficientnet  evonorm_s1    21.9    23.2  1.07 (0.94-1.08)
    digits     efficientnet  ln_relu       26.4    40.8  1.47 (1.09-1.91)
    digits     efficientnet  gn_relu       29.1    17.8  0.60 (0.58-0.62)
    digits     efficientnet  in_relu       30.1    16.8  0.55 (0.49-0.61)
    synthetic  resnet        relu           4.1     4.7  1.14 (1.02-1.16)
    synthetic  resnet        silu           4.7     6.0  1.29 (0.85-1.54)
    synthetic  resnet        bn_relu        5.3     6.3  1.27 (1.06-1.35)
    synthetic  resnet        evonorm_b0     3.5     3.8  1.04 (1.00-1.09)  1.13
    synthetic  resnet        evonorm_b1     2.4     2.3  1.00 (0.81-1.19)
    synthetic  resnet        evonorm_s0     3.9     4.4  1.15 (1.11-1.22)  1.16
    synthetic  resnet        ln_relu        3.8     4.4  1.16 (0.91-1.65)
    synthetic  resnet        gn_relu        5.5     3.3  0.61 (0.57-0.64)
    synthetic  resnet        in_relu        5.5     3.3  0.61 (0.46-0.61)
    synthetic  mobilenetv2   relu           4.6     6.4  1.39 (1.38-1.52)
    synthetic  mobilenetv2   silu           4.0     5.3  1.34 (1.17-1.37)
    synthetic  mobilenetv2   bn_relu        4.5     6.7  1.52 (1.30-1.61)
    synthetic  mobilenetv2   evonorm_b0     2.1     2.5  1.15 (0.92-1.39)  1.18
    synthetic  mobilenetv2   evonorm_s0     2.5     2.5  0.98 (0.84-1.09)  1.00
    synthetic  mobilenetv2   gn_relu        5.0     2.3  0.47 (0.44-0.48)
    synthetic  mobilenetv2   in_relu        5.2     2.1  0.40 (0.29-0.47)
    synthetic  efficientnet  relu           3.5     5.4  1.52 (1.32-1.58)
    synthetic  efficientnet  silu           3.4     4.5  1.32 (1.28-1.32)
    synthetic  efficientnet  bn_relu        3.7     5.6  1.47 (1.27-1.62)
    synthetic  efficientnet  evonorm_b0     2.2     2.6  1.20 (1.15-1.40)  1.18
    synthetic  efficientnet  evonorm_s0     2.5     2.5  0.99 (0.81-1.03)  1.00
    synthetic  efficientnet  gn_relu        4.8     2.3  0.48 (0.43-0.50)
    synthetic  efficientnet  in_relu        2.3     1.0  0.42 (0.34-0.64)
    =========  ============  ==========  ======  ======  ================  ============

Reading: every convnet gains with activation candidates (x1.13-1.58: the convolutions,
depthwise ones most, run faster on NHWC) and with BN-ReLU (x1.08-1.52). EvoNorm-B0 gains
x1.04-1.31 (resnet/digits: 0.93 on the first run, 1.11 and 1.14 on two repeats), EvoNorm-B1,
-S0, -S1 and LN-ReLU x0.87-1.47 (the two figures below 0.99, resnet/digits EvoNorm-B1 and
mobilenetv2/digits EvoNorm-S1, came with wide spreads; B1's repeat gave 1.05); EvoNorm-S0 at
3x32x32 on the mobile nets is even (0.98-1.00: its group std copies NHWC into groups). What
clearly loses is ``F.group_norm`` over groups or instances (GN-ReLU, IN-ReLU: x0.40-0.65; the
call is 3-14x slower on NHWC), so a model with such a layer (:func:`slow_channels_last_layers`)
stays contiguous. Hence the policy (:func:`choose_memory_format`): channels_last for every
``(convnet, kind)`` pair (:data:`CHANNELS_LAST`) unless the built model has one of those
layers.

On CUDA (not measured here: no GPU was available), channels_last is used for the same
models: cuDNN's NHWC kernels are the fast ones under bf16 autocast (tensor cores); the
group-norm exclusion is kept there too, as the conservative choice. MLPs and transformers
have no 4-D activations and always stay contiguous.
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

#: ``(arch, kind)`` pairs that train in channels_last on CPU (decided from the table above).
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

    ``F.group_norm`` with more than one group (group and instance statistics) runs 3-14x
    slower on an NHWC input than on NCHW, enough to lose the convolutions' gain (GN-ReLU and
    IN-ReLU models: 0.40-0.65x, see the module docstring): ``nn.GroupNorm``, the instance
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
