"""The generated torch code's fast paths (grammar/codegen.py + grammar/_rt_torch.py): pattern
based, so they must hold for evolved graphs, not only the built-ins.  Each fused form equals the
NumPy reference (float64, train and eval), its gradient passes gradcheck and gradgradcheck
(the rejection stage's stability test differentiates twice), running statistics follow the
grammar's update, and the exact-only conditions fall back to the plain ops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from layerforge.grammar import OPS, compile_graph, evaluate_numpy, make_space, parse, random_graph
from layerforge.grammar import _rt_torch as rt
from layerforge.grammar.codegen import normalization_fusions, positive_floors, torch_source

C = 6

#: text -> helper the generated forward must call (the pattern was recognised)
FUSED = {
    "max((v1 * x - mean(v1 * x, batch)) / std(v1 * x, batch) * weight + bias, 0)": "_batch_norm(",
    "tanh((x - mean(x, batch)) / std(x, batch))": "_batch_norm(",
    "(x - mean(x, group)) / std(x, group) * v1 + v0 ; groups=3": "_group_norm(",
    "sigmoid((x - mean(x, layer)) / std(x, layer) + bias)": "_group_norm(",
    "(abs(x) - mean(abs(x), instance)) / std(abs(x), instance) * weight": "_group_norm(",
    "x / max(std(x, batch), v1 * x + std(x, instance)) * weight + bias ; eps=0.001": "_maximum(",
    "x * sigmoid(v0 * x) / rms(x, group) * weight + bias ; groups=2": "_sigmoid_gate(",
    "sin(x) / (abs(x) + 1) * weight + bias": "_div_positive(",
    "x / max(x, var(x, layer)) * weight + bias": "_div_positive(",
    "min(x, v1 * x) * weight + bias": "_minimum(",
    "x / (square(x) + std(x, instance) * 2) + bias": "_div_positive(",
}
#: patterns that must NOT fuse (a shared inner node, or a mismatch)
NOT_FUSED = [
    "(x - mean(x, batch)) / std(x, batch) * weight + mean(x, batch)",  # the mean is read twice
    "(x - mean(x, batch)) / std(x, instance) * weight + bias",  # different axes
    "(x - mean(v1 * x, group)) / std(x, group) * weight + bias",  # different sources
]


def _x(shape, seed):
    return (
        torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        * 1.7
        + 0.3
    )


def _randomized(g, seed=0):
    mod = compile_graph(g, C).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return mod


def _numpy_params(mod):
    inv = {"v": "v1"}
    return {
        inv.get(k, k): v.detach().numpy().reshape(1, -1, 1, 1) for k, v in mod.named_parameters()
    }


def _running_by_node(g, mod):
    """evaluate_numpy's eval-mode ``running`` (batch node index -> value) from the module buffers."""
    from layerforge.grammar.codegen import buffer_names

    bufs = buffer_names(g.pruned())
    return {i: getattr(mod, b).detach().numpy() for i, b in bufs.items()}


@pytest.mark.parametrize("text", sorted(FUSED))
def test_fused_pattern_is_used_and_equals_numpy_train_and_eval(text):
    g = parse(text, "normact")
    src = torch_source(g, "L")
    assert FUSED[text] in src.split("def forward(self")[-1]
    mod = _randomized(g)
    params = _numpy_params(mod)
    for step in range(2):
        x = _x((4, C, 3, 3), step)
        np.testing.assert_allclose(
            mod(x).detach().numpy(),
            evaluate_numpy(g.pruned(), x.numpy(), params),
            rtol=1e-10,
            atol=1e-10,
        )
    mod.eval()
    x = _x((3, C, 2, 2), 7)
    running = _running_by_node(g, mod)
    np.testing.assert_allclose(
        mod(x).detach().numpy(),
        evaluate_numpy(g.pruned(), x.numpy(), params, running=running or None),
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.parametrize("text", sorted(FUSED))
@pytest.mark.parametrize("train", [True, False])
def test_fused_pattern_gradcheck_and_gradgradcheck(text, train):
    mod = _randomized(parse(text, "normact"), 1).train(train)
    x = _x((3, C, 2, 2), 2).requires_grad_(True)
    names = [n for n, _ in mod.named_parameters()]
    params = [p for _, p in mod.named_parameters()]

    def f(x, *ps):  # fresh copies of the running statistics each call: gradcheck calls f many times
        state = {k: v.clone() for k, v in mod.named_buffers()}
        return torch.func.functional_call(mod, {**dict(zip(names, ps)), **state}, (x,))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_batch_norm_fusion_keeps_running_statistics_of_the_grammar():
    g = parse(
        "max((v1 * x - mean(v1 * x, batch)) / std(v1 * x, batch) * weight + bias, 0) ; momentum=0.3",
        "normact",
    )
    mod = _randomized(g, 4)
    v = mod.v.detach().view(1, -1, 1, 1)
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for step in range(3):
        x = _x((5, C, 3, 2), 10 + step)
        mod(x)
        a = v * x
        rm = rm * 0.7 + 0.3 * a.mean((0, 2, 3))
        rv = rv * 0.7 + 0.3 * a.var((0, 2, 3), correction=1)
    torch.testing.assert_close(mod.running_mean, rm, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mod.running_var, rv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text", NOT_FUSED)
def test_shared_or_mismatched_statistics_are_not_fused(text):
    g = parse(text, "normact").pruned()
    assert normalization_fusions(g) == ({}, set())
    mod = _randomized(g, 5)
    x = _x((4, C, 3, 3), 3)
    np.testing.assert_allclose(
        mod(x).detach().numpy(),
        evaluate_numpy(g, x.numpy(), _numpy_params(mod)),
        rtol=1e-10,
        atol=1e-10,
    )


def test_a_shared_mean_updates_its_running_buffer_once():
    g = parse("(x - mean(x, batch)) / std(x, batch) * weight + mean(x, batch)", "normact")
    mod = compile_graph(g, C).double()
    x = _x((4, C, 3, 3), 1)
    mod(x)
    torch.testing.assert_close(mod.running_mean, 0.1 * x.mean((0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "max((x - mean(x, batch)) / std(x, batch) * weight + bias, 0)",
        "(x - mean(x, group)) / std(x, group) * weight + bias ; groups=2",
    ],
)
def test_normalization_falls_back_where_the_fused_kernel_is_not_exact(text):
    import dataclasses

    g = parse(text, "normact")
    # tiny eps: std may fall under the protected division's clamp, so no fused kernel
    mod = compile_graph(g, C, eps=1e-13).double()
    x = torch.zeros(4, C, 2, 2, dtype=torch.float64)
    x[:, :, 0, 0] = 1e-9  # variance ~1e-19: std ~ 3e-7 < 1e-6, the clamp is active
    g13 = dataclasses.replace(g, eps=1e-13)
    np.testing.assert_allclose(
        mod(x).detach().numpy(), evaluate_numpy(g13, x.numpy()), rtol=1e-9, atol=1e-12
    )
    assert torch.isfinite(mod(x)).all()
    # one value per channel in training: F.batch_norm would raise; the grammar gives 0 / sqrt(eps)
    m1 = compile_graph(g, C).double()
    x1 = _x((1, C, 1, 1), 3)
    np.testing.assert_allclose(
        m1(x1).detach().numpy(), evaluate_numpy(g, x1.numpy()), rtol=1e-10, atol=1e-10
    )
    # bfloat16 (and autocast) keep the grammar's float32 statistics path
    m2 = compile_graph(g, C)
    xb = _x((4, C, 3, 3), 4).float()
    y32 = m2(xb)
    y16 = m2(xb.bfloat16())
    assert y16.dtype == torch.bfloat16 and (y16.float() - y32).abs().max() < 0.05 * (
        1 + y32.abs().max()
    )
    # float64 input into a float32 module (buffer dtype differs): the plain path, still correct
    m3 = compile_graph(g, C)
    x3 = _x((4, C, 3, 3), 5)
    np.testing.assert_allclose(
        m3(x3).detach().numpy(), evaluate_numpy(g, x3.numpy()), rtol=1e-6, atol=1e-6
    )


def test_positive_floors():
    def floor(text, space="normact"):
        return positive_floors(parse(text, space))[-1]

    assert floor("std(x, batch)") == (0.0, 1.0)
    assert floor("max(std(x, batch), v1 * x + std(x, instance))") == (0.0, 1.0)
    assert floor("abs(x) + 2") == (2.0, 0.0)
    assert floor("max(x, 1)", "activation") == (1.0, 0.0)
    assert floor("mean(std(x, instance), batch)") == (0.0, 0.0)  # eval: the running mean, init 0
    assert floor("mean(std(x, instance), layer)") == (0.0, 1.0)
    assert floor("2 * rms(x, group)") == (0.0, 2.0)
    assert floor("square(x) * exp(x)") == (0.0, 0.0)
    for text in (
        "x",
        "v1 * std(x, batch)",
        "std(x, batch) - 1",
        "min(x, std(x, batch))",
        "sin(x) + 2",
    ):
        assert floor(text) is None, text


def test_div_positive_equals_protected_division():
    a = _x((50,), 1)
    for b in (
        torch.rand(50, dtype=torch.float64) * 1e-5,
        torch.rand(50, dtype=torch.float64) + 1e-5,
        torch.zeros(50, dtype=torch.float64),
    ):
        torch.testing.assert_close(rt._div_positive(a, b, 0.0), rt._pdiv(a, b), rtol=0, atol=0)
    b = torch.rand(50, dtype=torch.float64) + 0.5
    torch.testing.assert_close(rt._div_positive(a, b, 0.5), rt._pdiv(a, b), rtol=0, atol=0)


def test_maximum_minimum_values_exact_and_ties_go_to_the_first_operand():
    a = _x((40,), 1)
    b = _x((40,), 2)
    assert torch.equal(rt._maximum(a, b), torch.maximum(a, b))
    assert torch.equal(rt._minimum(a, b), torch.minimum(a, b))
    a.requires_grad_(True)
    t = a.detach().clone().requires_grad_(True)
    (rt._maximum(a, t) + rt._minimum(a, t)).sum().backward()
    assert torch.equal(a.grad, torch.full_like(a, 2.0)) and torch.equal(t.grad, torch.zeros_like(t))
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)  # broadcast operand
    x = _x((3, 4), 3).requires_grad_(True)
    assert torch.autograd.gradcheck(rt._maximum, (s, x)) and torch.autograd.gradgradcheck(
        rt._maximum, (s, x)
    )
    assert torch.autograd.gradcheck(rt._minimum, (x, s)) and torch.autograd.gradgradcheck(
        rt._minimum, (x, s)
    )


def _interpret(g, mod, x):
    """Plain autograd reference: every node with its op's own torch callable (train mode)."""
    vals = {}
    attrs = {"v1": "v"} if "v0" not in g.params else {}
    for i, n in enumerate(g.nodes):
        if n.op == "x":
            v = x
        elif n.op == "const":
            v = x.new_full((), float(n.value))
        elif n.op == "param":
            p = getattr(mod, attrs.get(n.name, n.name))
            v = p.view(1, -1, 1, 1) if g.space == "normact" else p
        elif OPS[n.op].aggregate:
            v = OPS[n.op].torch(
                vals[n.inputs[0]].expand_as(x), axis=n.axis, groups=mod.groups, eps=mod.eps
            )
        else:
            v = OPS[n.op].torch(*[vals[j] for j in n.inputs])
        vals[i] = v
    return vals[len(g.nodes) - 1].expand_as(x)


@pytest.mark.parametrize("kind", ["normact", "activation"])
def test_random_graphs_equal_a_plain_autograd_interpreter(kind):
    """Evolved-style graphs: value and gradients (x and parameters) equal op-by-op autograd."""
    rng = random.Random(5)
    space = make_space(kind, "full")
    checked = 0
    for k in range(40):
        g = random_graph(space, rng).pruned()
        mod = compile_graph(g, C if kind == "normact" else None).double()
        with torch.no_grad():
            for p in mod.parameters():
                p.add_(
                    0.2
                    * torch.randn(
                        p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(k)
                    )
                )
        x = (_x((4, C, 3, 3), k) if kind == "normact" else _x((64,), k)).requires_grad_(True)
        y, ref = mod(x), _interpret(g, mod, x)
        if not (torch.isfinite(ref).all() and ref.abs().max() < 1e6):
            continue  # overflow-scale values: compared elsewhere (no NaN by construction)
        torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9, msg=lambda m, g=g: f"{g}: {m}")
        w = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(100 + k))
        inputs = [x, *mod.parameters()]
        got = torch.autograd.grad((y * w).sum(), inputs, allow_unused=True)
        want = torch.autograd.grad((ref * w).sum(), inputs, allow_unused=True)
        for a, b in zip(got, want):
            if a is not None and b is not None and torch.isfinite(b).all() and b.abs().max() < 1e6:
                torch.testing.assert_close(
                    a, b, rtol=1e-7, atol=1e-7, msg=lambda m, g=g: f"{g}: {m}"
                )
        checked += 1
    assert checked >= 25


def test_protected_division_and_sqrt_keep_their_semantics_and_gradients():
    b = torch.tensor([-2.0, -1e-7, -0.0, 0.0, 1e-7, 3.0, -1e-6, 1e-6], dtype=torch.float64)
    a = torch.ones_like(b)
    mag = b.abs().clamp_min(1e-6)
    assert torch.equal(rt._pdiv(a, b), a / torch.where(b < 0, -mag, mag))  # -0.0 counts as +
    assert rt._pdiv(a, b)[2].item() == 1e6
    s = torch.tensor([-4.0, -1e-14, 0.0, 1e-14, 9.0], dtype=torch.float64)
    assert torch.equal(rt._psqrt(s), torch.sign(s) * torch.sqrt(s.abs().clamp_min(1e-12)))
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (rt._pdiv(z, z) + rt._psqrt(z)).sum().backward()
    assert torch.isfinite(z.grad).all()
    x = _x((4, 5), 1).requires_grad_(True)
    y = (_x((4, 5), 2) * 0.5).requires_grad_(True)
    row = _x((1, 5), 3).requires_grad_(True)  # a broadcast denominator
    for f, args in (
        (rt._pdiv, (x, y)),
        (rt._pdiv, (x, row)),
        (rt._pdiv, (row, x)),
        (rt._psqrt, (x,)),
    ):
        assert torch.autograd.gradcheck(f, args) and torch.autograd.gradgradcheck(f, args)
    for dtype in (torch.float32, torch.bfloat16):
        xb, yb = x.detach().to(dtype), y.detach().to(dtype)
        mag = yb.abs().clamp_min(1e-6)
        assert torch.equal(rt._pdiv(xb, yb), xb / torch.where(yb < 0, -mag, mag))


@pytest.mark.parametrize(
    "text,helper",
    [
        ("x * sigmoid(beta * x)", "_sigmoid_gate("),
        ("sigmoid_mul(1.5 * x, x)", "_sigmoid_gate("),
        ("sin(x * sigmoid(x)) + sigmoid(x)", "torch.nn.functional.silu("),
        ("x * sigmoid(beta * x) + beta * x", "(beta * x)"),
        ("max(x, beta * x) * 2 + 1", "_affine("),
        ("x / (1 + abs(x))", "_div_positive("),
    ],
)
def test_activation_fast_paths(text, helper):
    g = parse(text, "activation")
    assert helper in torch_source(g, "L").split("def forward(self")[-1]
    mod = compile_graph(g).double()
    with torch.no_grad():
        for p in mod.parameters():
            p.fill_(0.7)
    x = _x((30,), 4)
    kw = {k: v.item() for k, v in mod.named_parameters()}
    np.testing.assert_allclose(
        mod(x).detach().numpy(), evaluate_numpy(g, x.numpy(), kw), rtol=1e-10, atol=1e-10
    )
    xg = x[:10].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(mod, (xg,)) and torch.autograd.gradgradcheck(mod, (xg,))


@pytest.mark.parametrize(
    "text",
    [
        "x / max(std(x, batch), v1 * x + std(x, instance)) * weight + bias ; eps=0.001",
        "sqrt(x) / (v1 * x - 0.5) * sigmoid(v0 * x) * weight + bias",
        "x * sigmoid(v1 * x) / std(x, group) * weight + bias ; groups=2",
    ],
)
def test_backward_twice_with_retain_graph_gives_the_same_gradients(text):
    """The lean backwards work in place only on their own fresh temporaries, never on saved ones."""
    mod = _randomized(parse(text, "normact"), 2)
    x = _x((4, C, 3, 3), 6).requires_grad_(True)
    y = mod(x)
    w = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    first = torch.autograd.grad((y * w).sum(), [x, *mod.parameters()], retain_graph=True)
    second = torch.autograd.grad((y * w).sum(), [x, *mod.parameters()])
    for a, b in zip(first, second):
        assert torch.equal(a, b)
