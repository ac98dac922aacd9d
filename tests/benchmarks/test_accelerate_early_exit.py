"""benchmarks.accelerate: the compile-or-not decision stops early when even the warm-up step
cannot pay (no inductor compile)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.accelerate import CompilePolicy, maybe_torch_compile
from layerforge.grammar import get_builtin, layer_factory


def test_decision_stops_after_the_warm_up_step_when_even_it_cannot_pay() -> None:
    layer = layer_factory(get_builtin("bn_relu"))(8).train()
    calls = []

    def step() -> None:
        calls.append(1)
        F.relu(layer(torch.randn(4, 8, 5, 5))).sum().backward()

    _, dec = maybe_torch_compile(
        layer, steps=10, step_fn=step, policy=CompilePolicy(), measure_steps=3
    )
    assert not dec.compiled and len(calls) == 1 and "upper bound" in dec.reason
    calls.clear()
    _, dec = maybe_torch_compile(
        layer, steps=10, step_fn=step, policy=CompilePolicy(), force=False, measure_steps=3
    )
    assert not dec.compiled and len(calls) == 4  # forced: the full measurement, for the record
