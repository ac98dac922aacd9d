"""Decide per candidate and device whether ``torch.compile`` pays for a training run.

A grammar-compiled layer is straight-line eager PyTorch: cheap to build, but a statistics-heavy
norm-act graph (EvoNorm-B0) launches a dozen small kernels per call where a fused kernel would
launch one.  ``torch.compile`` fuses them, but compiling costs tens of seconds on a CPU (a few
on a GPU), which a short run (the 100-step quality stage) never earns back.  So:

1. time a few eager forward+backward steps of the module (or take ``eager_step_s`` from the
   caller), with no side effects on its buffers or gradients; when even the first (warm-up)
   step, an upper bound on the step time, predicts no pay-off, stop there (the common case
   on a CPU: the decision then costs one step, not four);
2. predict the compiled step as ``eager_step * speedup[device]`` and the compile time as
   ``compile_s[device]`` (conservative priors, replaced by what this process has measured:
   the slowest compile seen, the median speedup seen; a graph key already compiled in this
   process costs only a re-trace);
3. compile only when the predicted saving over ``steps`` exceeds ``margin`` times the predicted
   compile time;
4. when compiling, measure the real compile time and the compiled step on the spot, learn from
   them, and fall back to eager when the compiled module is not faster (or compiling fails).

Usage (a worker building a model for a ``steps``-step run)::

    model, decision = maybe_torch_compile(model, steps=task.steps, device=device,
                                          example_input=x, key=graph.key)

``decision`` (a :class:`CompileDecision`) says what was chosen and why, with every estimate and
measurement, so the cost of the choice can be reported and audited.

Why it lives beside the benchmark and not in the workers: benchmark 2 (``layer_overhead``)
measured that compiling even the layer that gains most (EvoNorm-B0 in the CPU ResNet) breaks
even only after thousands of steps, more than any proxy run trains, so the workers always
train eager and nothing in them would call this; ``layer_overhead`` uses it to check that
decision (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["CompileDecision", "CompilePolicy", "DEFAULT_POLICY", "maybe_torch_compile"]

#: Conservative priors, per device type: seconds to compile one module's forward+backward
#: (cold inductor cache), and the compiled step time as a fraction of the eager one.
PRIOR_COMPILE_S = {"cpu": 45.0, "cuda": 30.0}
PRIOR_SPEEDUP = {"cpu": 0.6, "cuda": 0.6}
#: What a graph key compiled before in this process costs again (dynamo re-trace, cache hit).
RECOMPILE_S = {"cpu": 5.0, "cuda": 3.0}


@dataclass
class CompileDecision:
    """What :func:`maybe_torch_compile` chose and why (all times in seconds)."""

    compiled: bool
    reason: str
    steps: int
    device: str
    key: str | None = None
    eager_step_s: float | None = None
    predicted_compiled_step_s: float | None = None
    predicted_compile_s: float | None = None
    predicted_saving_s: float | None = None
    measured_compile_s: float | None = None
    measured_compiled_step_s: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def overhead_s(self) -> float:
        """Seconds this decision spent before training (timing steps plus any compile)."""
        return self.measured_compile_s or 0.0


@dataclass
class CompilePolicy:
    """Estimates per device type, updated from what this process measured.

    ``margin``: the predicted saving must exceed ``margin`` x the predicted compile time.
    """

    margin: float = 1.5
    compile_s: dict[str, float] = field(default_factory=lambda: dict(PRIOR_COMPILE_S))
    speedup: dict[str, float] = field(default_factory=lambda: dict(PRIOR_SPEEDUP))
    recompile_s: dict[str, float] = field(default_factory=lambda: dict(RECOMPILE_S))
    observed_compile_s: dict[str, list[float]] = field(default_factory=dict)
    observed_speedup: dict[str, list[float]] = field(default_factory=dict)
    compiled_keys: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def estimate_compile_s(self, device_type: str, key: str | None) -> tuple[float, bool]:
        """(predicted compile seconds, whether the key was compiled before in this process)."""
        with self._lock:
            if key is not None and (device_type, key) in self.compiled_keys:
                return self.recompile_s.get(device_type, 5.0), True
            seen = self.observed_compile_s.get(device_type)
            if seen:
                return max(seen), False  # the slowest compile seen: conservative
            return self.compile_s.get(device_type, max(PRIOR_COMPILE_S.values())), False

    def estimate_speedup(self, device_type: str) -> float:
        with self._lock:
            seen = self.observed_speedup.get(device_type)
            if seen:
                return min(1.0, statistics.median(seen))
            return self.speedup.get(device_type, 0.6)

    def decide(
        self,
        eager_step_s: float,
        steps: int,
        device_type: str,
        key: str | None = None,
        baseline_step_s: float | None = None,
    ) -> CompileDecision:
        """Pure decision from an eager step time (no timing, no compiling).

        ``baseline_step_s`` (the same step with the native baseline layer, when known) floors
        the predicted compiled step: compiling removes the candidate's overhead, not more.
        """
        compile_s, cached = self.estimate_compile_s(device_type, key)
        compiled_step = eager_step_s * self.estimate_speedup(device_type)
        if baseline_step_s is not None:
            compiled_step = min(eager_step_s, max(compiled_step, baseline_step_s))
        saving = steps * (eager_step_s - compiled_step)
        pays = saving > self.margin * compile_s
        reason = (
            f"predicted saving {saving:.1f}s over {steps} steps "
            f"{'>' if pays else '<='} {self.margin:g} x predicted compile {compile_s:.1f}s"
        )
        return CompileDecision(
            compiled=pays,
            reason=reason,
            steps=steps,
            device=device_type,
            key=key,
            eager_step_s=eager_step_s,
            predicted_compiled_step_s=compiled_step,
            predicted_compile_s=compile_s,
            predicted_saving_s=saving,
            cached=cached,
        )

    def learn(
        self,
        device_type: str,
        key: str | None,
        compile_s: float | None,
        speedup: float | None,
        cached: bool,
    ) -> None:
        with self._lock:
            if key is not None:
                self.compiled_keys.add((device_type, key))
            if compile_s is not None and not cached:
                self.observed_compile_s.setdefault(device_type, []).append(compile_s)
            if speedup is not None:
                self.observed_speedup.setdefault(device_type, []).append(speedup)


DEFAULT_POLICY = CompilePolicy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _default_step(module: nn.Module, example_input: torch.Tensor) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        x = example_input.detach()
        if x.is_floating_point():
            x = x.requires_grad_(True)
        y = module(x)
        cot = torch.randn(y.shape, generator=gen).to(y.device, y.dtype)
        y.backward(cot)

    return step


def _time_steps(step: Callable[[], None], n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


class _Preserve:
    """Restore buffers (BN running stats ...) and gradients after timing steps."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        self.grads = {
            n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in self.module.named_parameters()
        }

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for n, b in self.module.named_buffers():
                if n in self.buffers:
                    b.copy_(self.buffers[n])
        for n, p in self.module.named_parameters():
            p.grad = self.grads.get(n)


def _uncompile(module: nn.Module) -> None:
    # nn.Module.compile() stores the compiled callable here; None restores eager calls.
    if hasattr(module, "_compiled_call_impl"):
        module._compiled_call_impl = None


def maybe_torch_compile(
    module: nn.Module,
    *,
    steps: int,
    device: str | torch.device = "cpu",
    example_input: torch.Tensor | None = None,
    step_fn: Callable[[], None] | None = None,
    eager_step_s: float | None = None,
    baseline_step_s: float | None = None,
    key: str | None = None,
    policy: CompilePolicy | None = None,
    force: bool | None = None,
    measure_steps: int = 3,
    compile_kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, CompileDecision]:
    """Compile ``module`` in place (``nn.Module.compile``) when it pays over ``steps`` steps.

    The eager step time comes from ``eager_step_s``, else from timing ``measure_steps``
    forward+backward steps of ``step_fn()`` (or of ``module(example_input)`` with a random
    cotangent) after one warm-up (the fastest step: robust to a loaded machine); when the
    warm-up step alone already predicts no pay-off (and ``force`` is None) the decision is made
    from it, an upper bound, without the further steps.  Buffers and gradients are restored
    afterwards.  ``baseline_step_s`` (native layer, same step) bounds
    the predicted gain.  ``key``
    (e.g. ``graph.key`` plus the shape) lets a repeated candidate reuse the compile.
    ``force=True``/``False`` skips the decision (still measured and learned from).
    Returns the module (the same object, compiled or not) and the :class:`CompileDecision`.
    Never raises for a compile failure: the module stays eager and the reason says why.
    """
    policy = policy or DEFAULT_POLICY
    device = torch.device(device)
    steps = int(steps)
    if step_fn is None and example_input is not None:
        step_fn = _default_step(module, example_input)
    if eager_step_s is None:
        if step_fn is None:
            raise ValueError("give eager_step_s, step_fn or example_input to time the eager module")
        with _Preserve(module):
            first_step_s = _time_steps(step_fn, 1, device)[0]
            # the predicted saving grows with the eager step, and the warm-up step is the slowest:
            # if even it cannot pay, the measured steps cannot either
            upper = policy.decide(first_step_s, steps, device.type, key, baseline_step_s)
            if not upper.compiled and force is None:
                upper.reason += " (from the warm-up step, an upper bound: not timed further)"
                return module, upper
            eager_step_s = min(_time_steps(step_fn, max(1, measure_steps), device))
    decision = policy.decide(eager_step_s, steps, device.type, key, baseline_step_s)
    if force is not None:
        decision.compiled = bool(force)
        decision.reason = f"forced {'on' if force else 'off'}; without forcing: {decision.reason}"
    if not decision.compiled:
        return module, decision
    try:
        module.compile(**(compile_kwargs or {}))
        if step_fn is None:
            return module, decision  # nothing to measure with: compiles on first use
        with _Preserve(module):
            t0 = time.perf_counter()
            _time_steps(step_fn, 1, device)  # triggers forward and backward compilation
            first = time.perf_counter() - t0
            compiled_step = min(_time_steps(step_fn, max(1, measure_steps), device))
    except Exception as exc:  # noqa: BLE001 - no compiler, unsupported op ...: stay eager
        _uncompile(module)
        decision.compiled = False
        decision.reason = f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); eager"
        return module, decision
    decision.measured_compile_s = max(0.0, first - compiled_step)
    decision.measured_compiled_step_s = compiled_step
    policy.learn(
        device.type, key, decision.measured_compile_s, compiled_step / eager_step_s, decision.cached
    )
    if compiled_step >= eager_step_s and force is None:
        _uncompile(module)
        decision.compiled = False
        decision.reason = (
            f"compiled step {compiled_step * 1e3:.1f} ms is not faster than eager "
            f"{eager_step_s * 1e3:.1f} ms; reverted to eager "
            f"(compile time {decision.measured_compile_s:.1f}s spent)"
        )
    return module, decision
