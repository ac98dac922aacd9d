"""Plain-torch layers for the workers tests (independent of the grammar), and grammar lookups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

#: The known-good activation built-ins every activation check must pass.
KNOWN_GOOD_ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "tanh",
    "sigmoid",
    "hardswish",
)


@pytest.fixture(autouse=True)
def one_thread():
    """Run the test at one torch thread, as an evaluator actor does (import it into a test
    module to apply it there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _vec(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return p.view([1, -1] + [1] * (x.dim() - 2))


def _dims(x: torch.Tensor, batch: bool) -> tuple[int, ...]:
    rest = tuple(range(2, x.dim()))
    return ((0,) + rest) if batch else (rest or (0,))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Affine(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.v1 = nn.Parameter(torch.ones(c))

    def affine(self, y, x):
        return y * _vec(self.weight, x) + _vec(self.bias, x)


class TorchBNReLU(Affine):
    def forward(self, x):
        d = _dims(x, True)
        m = x.mean(d, keepdim=True)
        v = x.var(d, keepdim=True, unbiased=False)
        return torch.relu(self.affine((x - m) / (v + 1e-5).sqrt(), x))


class TorchEvoNormB0(Affine):
    """x / max(sqrt(var_batch + eps), v1 * x + sqrt(var_instance + eps)) (training statistics)."""

    def forward(self, x):
        vb = x.var(_dims(x, True), keepdim=True, unbiased=False)
        vi = x.var(_dims(x, False), keepdim=True, unbiased=False)
        den = torch.maximum((vb + 1e-5).sqrt(), _vec(self.v1, x) * x + (vi + 1e-5).sqrt())
        return self.affine(x / den, x)


class TorchXExp(Affine):
    """x * exp(x) * gamma + beta: finite on probes, explodes under adversarial weights."""

    def forward(self, x):
        return self.affine(x * torch.exp(x.clamp(max=30)), x)


def torch_factories(kind: str) -> dict:
    if kind == "activation":
        return {"relu": lambda c: nn.ReLU(), "silu": lambda c: nn.SiLU()}
    return {"bn_relu": TorchBNReLU, "evonorm_b0": TorchEvoNormB0}


def grammar_ready() -> bool:
    try:
        from layerforge import grammar

        return all(
            hasattr(grammar, n) for n in ("get_builtin", "list_builtins", "layer_factory", "parse")
        )
    except Exception:  # noqa: BLE001 - any import failure means the grammar is not usable
        return False


class Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class ReLU(nn.Module):
    def forward(self, x):
        return torch.relu(x)


class Sin100(nn.Module):
    """Finite, non-constant, nonzero gradient, and useless: trains to chance."""

    def forward(self, x):
        return torch.sin(100 * x) * 1e-4


class Constant(nn.Module):
    def forward(self, x):
        return torch.sigmoid(0 * x)


class ExpExp(nn.Module):
    def forward(self, x):
        return torch.exp(torch.exp(x).clamp(max=30))


class NaNLayer(nn.Module):
    def forward(self, x):
        return x * float("nan")


class LateNaN(nn.Module):
    """Fine on probes, NaN once activations grow (a candidate that diverges in training)."""

    def forward(self, x):
        return torch.where(x.abs() > 6, x * float("nan"), torch.relu(x))


class OOMLayer(nn.Module):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


class Slow(nn.Module):
    def forward(self, x):
        import time

        time.sleep(0.05)
        return torch.relu(x)


def simple(cls):
    """A factory ``f(num_features)`` for a parameter-free module class."""
    return _Simple(cls)


class _Simple:
    def __init__(self, cls):
        self.cls = cls

    def __call__(self, num_features):
        return self.cls()
