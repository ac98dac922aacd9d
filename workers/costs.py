"""Cost of a candidate layer: its forward+backward time relative to the baseline, and its size.

The baseline is ReLU (activation) or BatchNorm+ReLU (normact), timed on the same tensor in the
same process right next to the candidate, so machine load affects both alike: each repeat
times the pair back to back, in alternating order (candidate first, then baseline first: the
second of a pair runs on warmer caches), and the ratio is the median of the pairs' ratios.
The baseline itself reads exactly 1.0: it is the layer every ratio is measured against.
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


def _is_baseline(factory: Any, kind: str) -> bool:
    """True when ``factory`` builds the baseline layer itself (a grammar layer factory whose
    graph is the baseline built-in's)."""
    graph = getattr(factory, "graph", None)
    if graph is None:
        return False
    try:
        from layerforge.grammar import get_builtin

        return graph.key == get_builtin("relu" if kind == "activation" else "bn_relu").key
    except Exception:  # noqa: BLE001 - a graph the grammar cannot key: not the baseline
        return False


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
    is_baseline: bool | None = None,
) -> dict[str, Any]:
    """``{"runtime_ratio", "num_params", "seconds", "baseline_seconds"}`` for one candidate.

    ``graph_or_factory``: anything :func:`workers.candidates.resolve_candidate` accepts, or a
    plain ``factory(num_features) -> nn.Module`` (then ``kind`` is required). ``seconds`` is the
    median forward+backward time of the candidate on a ``shape`` tensor, ``baseline_seconds``
    the baseline's, ``runtime_ratio`` the median ratio of the back-to-back pairs (exactly 1.0
    for the baseline itself); ``num_params`` counts the candidate's parameters at ``shape[1]``
    features. ``is_baseline`` says whether the layer is the baseline itself; by default that
    is read from the factory's ``graph`` (a grammar layer factory's), so a caller that wraps
    the factory (gain normalization, say) passes it.
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
    cand_times, base_times, ratios = [], [], []
    for index in range(max(1, repeats)):
        if index % 2 == 0:
            cand_times.append(_time_once(layer, x, grad))
            base_times.append(_time_once(base, x, grad))
        else:
            base_times.append(_time_once(base, x, grad))
            cand_times.append(_time_once(layer, x, grad))
        ratios.append(cand_times[-1] / base_times[-1] if base_times[-1] > 0 else float("inf"))
    seconds = statistics.median(cand_times)
    base_seconds = statistics.median(base_times)
    return {
        "runtime_ratio": 1.0
        if (_is_baseline(factory, kind) if is_baseline is None else is_baseline)
        else statistics.median(ratios),
        "num_params": int(sum(p.numel() for p in layer.parameters())),
        "seconds": seconds,
        "baseline_seconds": base_seconds,
    }
