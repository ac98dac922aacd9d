"""compile(): built-ins vs PyTorch's own functions and hand-written references (train and eval,
running statistics included), gradients, dtypes, shapes, layer factory, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerforge import grammar
from layerforge.grammar import (
    BUILTINS,
    GrammarError,
    compile_graph,
    evaluate_numpy,
    layer_factory,
    list_builtins,
    parse,
)

from .timm_reference import RefEvoNorm2dB0, RefEvoNorm2dB1, RefEvoNorm2dS0, RefEvoNorm2dS1

TORCH_ACTS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardswish": F.hardswish,
}


def test_every_activation_builtin_has_a_torch_reference():
    assert set(TORCH_ACTS) == set(list_builtins("activation"))


@pytest.mark.parametrize("name", sorted(TORCH_ACTS))
def test_activation_builtin_matches_pytorch(name):
    mod = compile_graph(BUILTINS[name])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, dtype=torch.float64, generator=g) * 4
    torch.testing.assert_close(mod(x), TORCH_ACTS[name](x), rtol=1e-12, atol=1e-12)
    x32 = x.float()
    torch.testing.assert_close(mod(x32), TORCH_ACTS[name](x32), rtol=1e-5, atol=1e-6)
    # NumPy reference in float64
    np.testing.assert_allclose(
        mod(x).numpy(), evaluate_numpy(BUILTINS[name], x.numpy()), rtol=1e-12, atol=1e-12
    )
    xg = (torch.randn(16, dtype=torch.float64, generator=g) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(mod, (xg,), eps=1e-6, atol=1e-5)


def _ref_bn_relu(x, m, train):
    return F.relu(
        F.batch_norm(
            x, m["running_mean"], m["running_var"], m["weight"], m["bias"], train, 0.1, 1e-5
        )
    )


def _norm_ref(kind, groups):
    def f(x, p, train):
        if kind == "gn_relu":
            y = F.group_norm(x, groups, p["weight"], p["bias"], 1e-5)
        elif kind == "ln_relu":
            y = F.group_norm(x, 1, p["weight"], p["bias"], 1e-5)
        else:
            y = F.instance_norm(x, weight=p["weight"], bias=p["bias"], eps=1e-5)
        return F.relu(y)

    return f


def _randomize(mod, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


REFERENCES = {
    "evonorm_b0": RefEvoNorm2dB0,
    "evonorm_b1": RefEvoNorm2dB1,
    "evonorm_s0": RefEvoNorm2dS0,
    "evonorm_s1": RefEvoNorm2dS1,
}


@pytest.mark.parametrize("channels", [64, 12])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_evonorm_builtins_match_timm_reference_train_and_eval(name, channels):
    ref = REFERENCES[name](channels).double()
    if hasattr(ref, "groups"):
        ref.groups = grammar._rt_torch._resolve_groups(channels, ref.groups)
    _randomize(ref, 1)
    mod = compile_graph(BUILTINS[name], channels).double()
    mod.load_state_dict(ref.state_dict(), strict=True)  # timm's names and shapes
    g = torch.Generator().manual_seed(2)
    for _step in range(3):
        x = torch.randn(4, channels, 5, 5, dtype=torch.float64, generator=g) * 2 + 0.5
        torch.testing.assert_close(mod(x), ref(x), rtol=1e-10, atol=1e-10)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(mod.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    mod.eval()
    ref.eval()
    x = torch.randn(3, channels, 4, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["bn_relu", "gn_relu", "ln_relu", "in_relu"])
def test_norm_relu_builtins_match_torch_norms(name):
    c = 64
    mod = compile_graph(BUILTINS[name], c).double()
    _randomize(mod, 3)
    p = {k: v.detach().clone() for k, v in mod.state_dict().items()}
    ref = _ref_bn_relu if name == "bn_relu" else _norm_ref(name, 32)
    g = torch.Generator().manual_seed(4)
    for _step in range(3):
        x = torch.randn(4, c, 5, 5, dtype=torch.float64, generator=g) * 1.5 - 0.3
        torch.testing.assert_close(mod(x), ref(x, p, True), rtol=1e-10, atol=1e-10)
    if name == "bn_relu":
        torch.testing.assert_close(mod.running_mean, p["running_mean"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mod.running_var, p["running_var"], rtol=1e-12, atol=1e-12)
        assert not torch.allclose(mod.running_var, torch.ones(c, dtype=torch.float64))
    mod.eval()
    x = torch.randn(3, c, 4, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(mod(x), ref(x, p, False), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list_builtins("normact"))
def test_normact_builtin_matches_numpy_and_gradcheck(name):
    g = BUILTINS[name]
    mod = compile_graph(g, 8).double()
    _randomize(mod, 5)
    params = {k: v.detach().numpy() for k, v in mod.named_parameters()}
    inv = {"v": "v1"}
    nparams = {inv.get(k, k): v.reshape(1, -1, 1, 1) for k, v in params.items()}
    x = torch.randn(3, 8, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    np.testing.assert_allclose(
        mod(x).detach().numpy(), evaluate_numpy(g, x.numpy(), nparams), rtol=1e-10, atol=1e-10
    )
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(mod, (xg,), eps=1e-6, atol=1e-5, rtol=1e-4)
    mod.eval()
    assert torch.autograd.gradcheck(mod, (xg,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_s0", "bn_relu", "gn_relu"])
def test_dtypes_and_autocast(name):
    mod = compile_graph(BUILTINS[name], 32)
    x = torch.randn(4, 32, 6, 6)
    y32 = mod(x)
    assert y32.dtype == torch.float32 and torch.isfinite(y32).all()
    y16 = mod(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16.float()).all()
    assert (y16.float() - y32).abs().max() < 0.1 * (1 + y32.abs().max())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = mod(x)
    assert torch.isfinite(ya.float()).all()
    assert (ya.float() - y32).abs().max() < 0.1 * (1 + y32.abs().max())
    y64 = mod.double()(x.double())
    assert y64.dtype == torch.float64


@pytest.mark.parametrize("shape", [(8, 16), (8, 16, 10), (8, 16, 4, 4)])
def test_normact_input_shapes(shape):
    mod = compile_graph(BUILTINS["evonorm_b0"], 16)
    x = torch.randn(*shape)
    assert mod(x).shape == x.shape
    mod2 = compile_graph(BUILTINS["ln_relu"], 16)
    y = mod2(torch.randn(*shape))
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        mod(torch.randn(2, 16, 2, 2, 2))


def test_generated_forward_is_straight_line_code():
    mod = compile_graph(BUILTINS["evonorm_s0"], 32)
    src = type(mod).source
    assert "def forward" in src and "_stat(x, 'std', 'group'" in src
    assert "for " not in src.split("def forward")[-1]  # no interpreter loop
    assert [n for n, _ in mod.named_parameters()] == ["weight", "bias", "v"]


def test_parameters_and_apply_act():
    act = compile_graph(parse("x * sigmoid(beta * x)", "activation"))
    assert [n for n, _ in act.named_parameters()] == ["beta"] and act.beta.item() == 1.0
    b0 = compile_graph(BUILTINS["evonorm_b0"], 8, apply_act=False)
    assert "v" not in dict(b0.named_parameters()) and "running_var" in dict(b0.named_buffers())
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(b0(x), x)
    bn = compile_graph(BUILTINS["bn_relu"], 8)
    assert sorted(dict(bn.named_buffers())) == ["running_mean", "running_var"]


def test_layer_factory_and_pickle():
    f = layer_factory(BUILTINS["evonorm_s0"])
    a, b = f(16), f(32)
    assert a is not b and a.weight.shape == (16,) and b.weight.shape == (32,)
    fa = layer_factory(BUILTINS["mish"])
    assert fa(64)(torch.zeros(3)).shape == (3,)
    f2 = pickle.loads(pickle.dumps(f))
    assert f2(8).weight.shape == (8,)
    m = compile_graph(BUILTINS["bn_relu"], 4)
    m(torch.randn(5, 4, 2, 2))
    m2 = pickle.loads(pickle.dumps(m))
    torch.testing.assert_close(m2.running_var, m.running_var)
    m.eval(), m2.eval()
    x = torch.randn(2, 4, 2, 2)
    torch.testing.assert_close(m2(x), m(x))


def test_compile_errors():
    with pytest.raises(GrammarError, match="num_features"):
        compile_graph(BUILTINS["evonorm_b0"])
    with pytest.raises(GrammarError, match="expected a Graph"):
        compile_graph("x")  # type: ignore[arg-type] - the wrong type on purpose


def test_group_count_adjusts_like_timm():
    assert compile_graph(BUILTINS["evonorm_s0"], 64).groups == 32
    assert compile_graph(BUILTINS["evonorm_s0"], 24).groups == 24
    assert compile_graph(BUILTINS["evonorm_s0"], 48).groups == 24
    assert compile_graph(BUILTINS["evonorm_s0"], 64, group_size=16).groups == 4
    y = compile_graph(BUILTINS["gn_relu"], 20)(torch.randn(2, 20, 3, 3))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_evonorm_float32_matches_timm_reference(name):
    ref = REFERENCES[name](32)
    _randomize(ref, 8)
    mod = compile_graph(BUILTINS[name], 32)
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 32, 5, 5, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-5, atol=1e-5)
    mod.eval(), ref.eval()
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-5, atol=1e-5)


def test_every_builtin_and_op_runs_in_bfloat16():
    x = torch.randn(2, 8, 3, 3)
    for name, g in BUILTINS.items():
        mod = compile_graph(g, 8 if g.space == "normact" else None)
        y = mod(x.bfloat16())
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all(), name
    for name, op in grammar.OPS.items():
        text = (
            f"{name}(x, batch)"
            if op.aggregate
            else f"{name}({', '.join(['x', 'cos(x)', 'sin(x)'][: op.arity])})"
        )
        space = "normact" if op.aggregate else "activation"
        mod = compile_graph(parse(text, space), 8 if op.aggregate else None)
        y = mod(x.bfloat16())
        assert torch.isfinite(y.float()).all(), name
