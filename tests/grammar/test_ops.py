"""Every op: compiled torch code == NumPy reference (float64), gradients pass gradcheck,
protected semantics never give NaN, registry API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerforge import grammar
from layerforge.grammar import (
    OPS,
    GrammarError,
    compile_graph,
    evaluate_numpy,
    get_op,
    list_ops,
    parse,
)
from layerforge.grammar.ops import AXES

ELEMENTWISE = sorted(n for n, op in OPS.items() if not op.aggregate)
AGGREGATES = sorted(n for n, op in OPS.items() if op.aggregate)
SECOND = ["x", "cos(x) + 2", "sin(x)"]


def _x(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.sign(n) * (0.25 + n.abs())  # away from the kinks at 0


def _graph(name: str, space: str = "activation") -> grammar.Graph:
    op = OPS[name]
    return parse(f"{name}({', '.join(SECOND[: op.arity])})", space)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_op_matches_numpy_and_gradcheck(name):
    g = _graph(name)
    mod = compile_graph(g)
    x = _x((40,))
    y = mod(x)
    assert y.dtype == torch.float64
    ref = evaluate_numpy(g, x.numpy())
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # the op's own torch callable agrees with its NumPy callable too
    args_t = [x, torch.cos(x) + 2, torch.sin(x)][: OPS[name].arity]
    args_n = [a.numpy() for a in args_t]
    np.testing.assert_allclose(
        OPS[name].torch(*args_t).numpy(), OPS[name].numpy(*args_n), rtol=1e-10, atol=1e-12
    )
    xg = x[:12].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(mod, (xg,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", AGGREGATES)
@pytest.mark.parametrize("axis", AXES)
def test_statistic_matches_numpy_and_gradcheck(name, axis):
    g = parse(f"x - {name}(x, {axis}) ; groups=2", "normact")
    mod = compile_graph(g, 4).double()
    x = _x((3, 4, 3, 3), seed=1)
    y = mod(x)
    ref = evaluate_numpy(g, x.numpy())
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(mod, (xg,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_ops_never_nan_on_extreme_input(name):
    x = torch.tensor(
        [-1e30, -1e4, -50.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 50.0, 1e4, 1e30], dtype=torch.float64
    )
    op = OPS[name]
    args = [x, x.flip(0), torch.zeros_like(x)][: op.arity]
    out_t = op.torch(*args)
    with np.errstate(all="ignore"):
        out_n = op.numpy(*[a.numpy() for a in args])
    assert not torch.isnan(out_t).any(), name
    assert not np.isnan(out_n).any(), name
    # and the gradient at 0 is not NaN either
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    op.torch(*([z] * op.arity)).sum().backward()
    assert not torch.isnan(z.grad).any(), name


def test_protected_semantics():
    t = torch.tensor([-4.0, 0.0, 4.0], dtype=torch.float64)
    assert torch.equal(OPS["sqrt"].torch(t), torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64))
    assert OPS["log"].torch(torch.zeros(1)).item() == pytest.approx(np.log(1e-6), rel=1e-6)
    assert torch.isfinite(OPS["div"].torch(torch.ones(1), torch.zeros(1))).all()
    assert OPS["div"].torch(torch.tensor([3.0]), torch.tensor([-2.0])).item() == -1.5
    assert torch.isfinite(OPS["exp"].torch(torch.tensor([1000.0]))).all()


def test_registry_api():
    assert get_op("sigmoid").arity == 1 and get_op("lerp").arity == 3
    with pytest.raises(GrammarError, match="unknown op 'nope'"):
        get_op("nope")
    act = {op.name for op in list_ops("activation")}
    norm = {op.name for op in list_ops("normact")}
    assert "std" not in act and {"std", "mean", "sqmean", "var", "rms"} <= norm
    assert len(list_ops()) == len(OPS)
    with pytest.raises(GrammarError):
        list_ops("conv")
    for op in list_ops("activation"):
        assert op.sympy is not None, op.name
        assert op.latex and op.torch_src and op.numpy_src
