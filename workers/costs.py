"""Cost of a candidate layer: its forward+backward time relative to the baseline, and its size.

The baseline is ReLU (activation) or BatchNorm+ReLU (normact), timed on the same tensor in the
same process right next to the candidate (interleaved repeats, median), so machine load
affects both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layerforge.workers.candidates import Candidate, resolve_candidate

__all__ = ["baseline_factory", "measure_layer_cost"]


class _BNReLU(nn.Module):
    """BatchNorm + ReLU over channel axis 1, for (N, C), (N, C, L) and (N, C, H, W)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return torch.relu(self.bn(x))
        shape = x.shape
        return torch.relu(self.bn(x.reshape(shape[0], shape[1], -1, 1))).reshape(shape)


def baseline_factory(kind: str) -> Callable[[int], nn.Module]:
    """The grammar's ``relu`` / ``bn_relu`` built-in when available, else the torch equivalent."""
    try:
        from layerforge.grammar import get_builtin, layer_factory

        return layer_factory(get_builtin("relu" if kind == "activation" else "bn_relu"))
    except Exception:  # noqa: BLE001 - grammar not ready or without builtins: plain torch
        return (lambda c: nn.ReLU()) if kind == "activation" else _BNReLU


def _time_once(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda *a: None)
    xi = x.detach().requires_grad_(True)
    sync()
    t0 = time.perf_counter()
    y = layer(xi)
    y.backward(grad)
    sync()
    return time.perf_counter() - t0


def measure_layer_cost(
    graph_or_factory: Any,
    kind: str | None = None,
    *,
    shape: tuple[int, ...] = (64, 32, 16, 16),
    repeats: int = 10,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """``{"runtime_ratio", "num_params", "seconds", "baseline_seconds"}`` for one candidate.

    ``graph_or_factory``: anything :func:`workers.candidates.resolve_candidate` accepts, or a
    plain ``factory(num_features) -> nn.Module`` (then ``kind`` is required). ``seconds`` is the
    median forward+backward time of the candidate on a ``shape`` tensor, ``runtime_ratio`` that
    divided by the baseline's median on the same tensor; ``num_params`` counts the candidate's
    parameters at ``shape[1]`` features.
    """
    if (
        callable(graph_or_factory)
        and not isinstance(graph_or_factory, (dict, Candidate))
        and not hasattr(graph_or_factory, "space")
    ):
        if kind is None:
            raise ValueError("kind is required when measuring a plain layer factory")
        factory = graph_or_factory
    else:
        cand = resolve_candidate(graph_or_factory)
        kind = kind or cand.kind
        factory = cand.factory
    device = torch.device(device)
    channels = int(shape[1])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    layer = factory(channels).to(device).train()
    base = baseline_factory(kind)(channels).to(device).train()
    for _ in range(max(0, warmup)):
        _time_once(layer, x, grad)
        _time_once(base, x, grad)
    cand_times, base_times = [], []
    for _ in range(max(1, repeats)):
        cand_times.append(_time_once(layer, x, grad))
        base_times.append(_time_once(base, x, grad))
    seconds = statistics.median(cand_times)
    base_seconds = statistics.median(base_times)
    return {
        "runtime_ratio": seconds / base_seconds if base_seconds > 0 else float("inf"),
        "num_params": int(sum(p.numel() for p in layer.parameters())),
        "seconds": seconds,
        "baseline_seconds": base_seconds,
    }
