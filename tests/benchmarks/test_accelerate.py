"""benchmarks.accelerate: the compile-or-not decision (no timing asserted, no inductor compile)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.accelerate import CompilePolicy, maybe_torch_compile
from layerforge.grammar import get_builtin, layer_factory


def test_short_runs_never_compile_long_runs_do() -> None:
    policy = CompilePolicy()
    short = policy.decide(eager_step_s=0.05, steps=100, device_type="cpu")
    assert not short.compiled and "100 steps" in short.reason
    long = policy.decide(eager_step_s=0.05, steps=100_000, device_type="cpu")
    assert long.compiled
    # nothing to gain when the eager step already matches the native baseline
    assert not policy.decide(0.05, 100_000, "cpu", baseline_step_s=0.05).compiled


def test_learned_compile_time_and_cache_by_key() -> None:
    policy = CompilePolicy()
    policy.learn("cpu", "k1", compile_s=200.0, speedup=0.5, cached=False)
    assert policy.estimate_compile_s("cpu", None) == (200.0, False)
    est, cached = policy.estimate_compile_s("cpu", "k1")
    assert cached and est < 200.0
    assert policy.estimate_speedup("cpu") == 0.5


def test_decision_has_no_side_effects_and_stays_eager() -> None:
    layer = layer_factory(get_builtin("evonorm_b0"))(8).train()
    before = {n: b.clone() for n, b in layer.named_buffers()}
    x = torch.randn(4, 8, 5, 5)
    mod, dec = maybe_torch_compile(layer, steps=10, example_input=x, policy=CompilePolicy())
    assert mod is layer and not dec.compiled and dec.eager_step_s > 0
    for n, b in layer.named_buffers():
        assert torch.equal(b, before[n])
    assert all(p.grad is None for p in layer.parameters())


def test_compile_failure_falls_back_to_eager() -> None:
    layer = layer_factory(get_builtin("silu"))(None)
    mod, dec = maybe_torch_compile(
        layer,
        steps=10,
        example_input=torch.randn(4, 3),
        force=True,
        compile_kwargs={"backend": "no-such-backend"},
    )
    assert not dec.compiled and "failed" in dec.reason
    assert torch.allclose(mod(torch.ones(2)), F.silu(torch.ones(2)))


def test_whole_model_with_generated_layers_traces() -> None:
    """dynamo must resolve the generated layers' globals (backend='eager': no C++ compile)."""
    from layerforge.workers.architectures import build_model

    torch.manual_seed(0)
    model = build_model(
        "resnet",
        input_shape=(1, 8, 8),
        num_classes=3,
        kind="normact",
        layer_factory=layer_factory(get_builtin("evonorm_b0")),
        scale="cpu",
    )
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])

    def step() -> None:
        F.cross_entropy(model(x), y).backward()

    mod, dec = maybe_torch_compile(
        model,
        steps=10,
        step_fn=step,
        force=True,
        policy=CompilePolicy(),
        compile_kwargs={"backend": "eager"},
    )
    assert dec.compiled, dec.reason
    assert dec.measured_compile_s is not None and dec.measured_compiled_step_s is not None
    assert torch.isfinite(mod(x)).all()
