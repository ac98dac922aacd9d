"""The rejection protocol: ordered, cheap-to-expensive stages that throw bad candidates away.

Stages (a campaign picks which run through ``RejectionConfig.stages``; order is fixed):

1. ``static``: the grammar's static check (depends on x, within limits, allowed ops).
2. ``probe``: forward and backward on a few probe batches (unit scale and large magnitude,
   train and eval mode, and the input ranks the proxies will feed): outputs and input
   gradients finite, output not constant, gradient not zero everywhere, and on unit-scale
   inputs output and gradient magnitudes under ``probe_max_output`` / ``probe_max_grad``.
3. ``duplicate``: the candidate's functional fingerprint was seen before (``seen(fp)``
   returns the earlier result): the earlier result is reused, no training happens.
4. ``stability`` (normact only): EvoNorm's test. In a small convnet built with the candidate,
   take ``stability_steps`` steps of gradient *ascent* on the network weights (each tensor
   moved by ``stability_step_size`` times its own norm) to maximise the norm of the loss
   gradient w.r.t. the weights; reject when that norm exceeds ``stability_max_grad_norm`` or
   stops being finite.
5. ``trainability``: a few cheap checks on the proxy networks themselves, before any real
   training. Build each proxy's network with the candidate (the same network and run that the
   quality stage continues) and, on one batch of training inputs at initialisation, reject when
   the logits are not finite, when their mean magnitude exceeds ``trainability_max_logit``
   (the signal explodes through the stack), or when their standard deviation across the batch
   is under ``trainability_min_logit_spread`` (the network's output ignores its input: the
   signal dies in the stack, and such a network predicts one class). Then take the first
   ``trainability_steps`` (default 10) training steps, reading the loss after every step, and
   reject at the first NaN/Inf loss. A rejection here costs a network build, one forward pass
   and at most ``trainability_steps`` steps, a small fraction of the quality stage.
6. ``quality``: continue every proxy's run to ``quality_steps`` (default 100) steps; reject when
   any proxy's validation accuracy is under ``quality_min_accuracy`` (default 0.2) or it
   diverged (noticed at the training loop's next loss check, so a diverging run stops early).
7. ``full``: continue the same runs to each proxy's full ``steps`` (the quality stage is the
   first ``quality_steps`` of the full run, as in EvoNorm, so nothing is trained twice).

:func:`evaluate_candidate` never raises for a bad candidate: NaN/Inf, out-of-memory, an
exception in the candidate's code and the time limit are all recorded verdicts
(``status="rejected"`` with the stage and a reason). Bad *input* that is not the candidate's
fault (an unknown architecture or dataset in the proxies, a bad config) gives
``status="failed"`` with the error message.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerforge.workers.candidates import Candidate, resolve_candidate
from layerforge.workers.datasets import DatasetCache
from layerforge.workers.errors import InvalidConfigError, UnknownNameError, WorkersError
from layerforge.workers.tasks import ProxyTask

__all__ = [
    "STAGES",
    "RejectionConfig",
    "StageVerdict",
    "evaluate_candidate",
]

STAGES = ("static", "probe", "duplicate", "stability", "trainability", "quality", "full")


@dataclass
class RejectionConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    # static
    space: dict[str, Any] = field(default_factory=dict)  # make_space(kind, **space)
    # probe
    probe_batch: int = 16
    probe_channels: int = 8
    probe_size: int = 6
    probe_scales: list[float] = field(default_factory=lambda: [1.0, 10.0])
    probe_max_output: float = 1e4
    probe_max_grad: float = 1e4
    probe_min_range: float = 1e-6
    # stability
    stability_steps: int = 5
    stability_step_size: float = 0.1
    stability_max_grad_norm: float = 1e3
    stability_batch: int = 16
    # trainability
    trainability_steps: int = 10
    trainability_min_logit_spread: float = 1e-3
    trainability_max_logit: float = 1e3
    # quality
    quality_steps: int = 100
    quality_min_accuracy: float = 0.2
    # everything
    time_limit_s: float | None = None
    measure_costs: bool = True
    cost_shape: list[int] = field(default_factory=lambda: [64, 32, 16, 16])
    cost_repeats: int = 5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not all(
            isinstance(s, str) for s in self.stages
        ):
            raise InvalidConfigError("stages", "must be a list of stage names")
        for s in self.stages:
            if s not in STAGES:
                raise UnknownNameError("stage", s, STAGES)
        self.stages = [s for s in STAGES if s in self.stages]  # fixed order, no repeats
        ints = (
            "probe_batch",
            "probe_channels",
            "probe_size",
            "stability_steps",
            "stability_batch",
            "trainability_steps",
            "quality_steps",
            "cost_repeats",
        )
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidConfigError(name, f"must be an integer >= 1, got {v!r}")
        positives = (
            "probe_max_output",
            "probe_max_grad",
            "stability_step_size",
            "stability_max_grad_norm",
            "trainability_max_logit",
        )
        for name in positives:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise InvalidConfigError(name, f"must be a positive number, got {v!r}")
        v = self.quality_min_accuracy
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise InvalidConfigError(
                "quality_min_accuracy", f"must be a number in [0, 1], got {v!r}"
            )
        for name in ("probe_min_range", "trainability_min_logit_spread"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise InvalidConfigError(name, f"must be a finite number >= 0, got {v!r}")
        if (
            not isinstance(self.probe_scales, (list, tuple))
            or not self.probe_scales
            or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0
                for s in self.probe_scales
            )
        ):
            raise InvalidConfigError(
                "probe_scales",
                f"must be a non-empty list of positive numbers, got {self.probe_scales!r}",
            )
        self.probe_scales = [float(s) for s in self.probe_scales]
        if self.time_limit_s is not None and (
            isinstance(self.time_limit_s, bool)
            or not isinstance(self.time_limit_s, (int, float))
            or self.time_limit_s <= 0
        ):
            raise InvalidConfigError(
                "time_limit_s",
                f"must be a positive number or null, got {self.time_limit_s!r}",
            )
        if not isinstance(self.measure_costs, bool):
            raise InvalidConfigError("measure_costs", "must be true or false")
        if not isinstance(self.space, dict):
            raise InvalidConfigError("space", "must be an object of make_space arguments")
        if (
            not isinstance(self.cost_shape, (list, tuple))
            or len(self.cost_shape) not in (2, 3, 4)
            or not all(isinstance(s, int) and s >= 1 for s in self.cost_shape)
        ):
            raise InvalidConfigError(
                "cost_shape", f"must be 2-4 positive integers, got {self.cost_shape!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RejectionConfig:
        if data is None:
            return cls()
        if isinstance(data, RejectionConfig):
            return data
        if not isinstance(data, dict):
            raise InvalidConfigError("rejection", f"must be an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidConfigError(
                unknown[0],
                f"unknown rejection setting; valid settings: {', '.join(sorted(names))}",
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StageVerdict:
    name: str
    passed: bool
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 6),
            "passed": self.passed,
            "reason": self.reason,
        }


class _Reject(Exception):
    """A stage's negative verdict (internal control flow)."""


class _Fail(Exception):
    """Infrastructure / bad-input failure, not the candidate's fault (internal)."""


class _Deadline:
    def __init__(self, limit: float | None):
        self.limit = limit
        self.start = time.perf_counter()

    def remaining(self) -> float | None:
        return None if self.limit is None else self.limit - (time.perf_counter() - self.start)

    def check(self, where: str) -> None:
        r = self.remaining()
        if r is not None and r <= 0:
            raise _Reject(f"time limit of {self.limit:g}s exceeded during {where}")


def is_oom(exc: BaseException) -> bool:
    oom_types = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t is not None
    )
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
    )


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg[:300]}" if msg else type(exc).__name__


# --------------------------------------------------------------------------- stages


def _stage_static(cand: Candidate, cfg: RejectionConfig) -> str:
    if cand.graph is None:
        return "no graph (a torch factory); nothing to check statically"
    from layerforge.grammar import GrammarError, check_static, make_space

    try:
        space = make_space(cand.kind, **cfg.space)
    except (GrammarError, TypeError) as exc:
        raise _Fail(f"bad space setting: {exc}") from exc
    try:
        check_static(cand.graph, space)
    except GrammarError as exc:
        raise _Reject(str(exc)) from exc
    return "ok"


def _probe_shapes(cand: Candidate, cfg: RejectionConfig, archs: set[str]) -> list[tuple[int, ...]]:
    n, c, s = cfg.probe_batch, cfg.probe_channels, cfg.probe_size
    if cand.kind == "activation":
        return [(n, c, s, s)]
    shapes = [(n, c, s, s)]
    if "mlp" in archs:
        shapes.append((n * s, c))
    if "transformer" in archs:
        shapes.append((n, c, s * s))
    return shapes


def _stage_probe(
    cand: Candidate, cfg: RejectionConfig, device: torch.device, archs: set[str]
) -> str:
    gen = torch.Generator().manual_seed(7)
    notes = []
    for shape in _probe_shapes(cand, cfg, archs):
        torch.manual_seed(0)
        layer = cand.factory(shape[1]).to(device)
        for scale in cfg.probe_scales:
            where = f"probe batch {tuple(shape)} x~N(0, {scale:g}^2)"
            x = (torch.randn(shape, generator=gen) * scale).to(device).requires_grad_(True)
            cot = torch.randn(shape, generator=gen).to(device)
            layer.train()
            try:
                y = layer(x)
            except Exception as exc:
                if is_oom(exc):
                    raise
                raise _Reject(f"forward raised {_describe(exc)} on {where}") from exc
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                raise _Reject(
                    f"output shape {getattr(y, 'shape', None)} differs from input shape {tuple(shape)}"
                )
            yd = y.detach().float()
            if not torch.isfinite(yd).all():
                bad = (~torch.isfinite(yd)).float().mean().item()
                raise _Reject(f"output is not finite (NaN/Inf in {bad:.0%} of values) on {where}")
            try:
                (gx,) = torch.autograd.grad(y, x, cot, allow_unused=True)
            except Exception as exc:
                if is_oom(exc):
                    raise
                raise _Reject(f"backward raised {_describe(exc)} on {where}") from exc
            gx = torch.zeros_like(x) if gx is None else gx.detach().float()
            if not torch.isfinite(gx).all():
                raise _Reject(f"gradient w.r.t. the input is not finite on {where}")
            if scale == min(cfg.probe_scales):
                top = yd.abs().max().item()
                spread = (yd.max() - yd.min()).item()
                if spread <= cfg.probe_min_range * (1.0 + top):
                    raise _Reject(
                        f"output is constant (always {yd.flatten()[0].item():.4g}) on {where}"
                    )
                gmax = gx.abs().max().item()
                if gmax <= 1e-12:
                    raise _Reject(f"gradient w.r.t. the input is zero everywhere on {where}")
                if top > cfg.probe_max_output:
                    raise _Reject(
                        f"output magnitude {top:.3g} exceeds {cfg.probe_max_output:g} on {where}"
                    )
                if gmax > cfg.probe_max_grad:
                    raise _Reject(
                        f"gradient w.r.t. the input explodes: {gmax:.3g} > {cfg.probe_max_grad:g} on {where}"
                    )
        # eval mode (running statistics) must be finite too
        layer.eval()
        with torch.no_grad():
            x = torch.randn(shape, generator=gen).to(device)
            try:
                y = layer(x)
            except Exception as exc:
                if is_oom(exc):
                    raise
                raise _Reject(
                    f"eval-mode forward raised {_describe(exc)} on {tuple(shape)}"
                ) from exc
            if not torch.isfinite(y.float()).all():
                raise _Reject(f"eval-mode output is not finite on {tuple(shape)}")
        notes.append(str(tuple(shape)))
    return f"finite, non-constant, non-zero gradient on {', '.join(notes)} at scales {cfg.probe_scales}"


class _StabilityNet(nn.Module):
    def __init__(self, factory: Callable[[int], nn.Module], width: int = 8, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.l1 = factory(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.l2 = factory(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.l2(self.conv2(self.l1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _stability_grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool):
    params = [p for p in net.parameters() if p.requires_grad]
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    sq = sum((g.float() ** 2).sum() for g in grads if g is not None)
    return params, loss, sq


def _stage_stability(
    cand: Candidate, cfg: RejectionConfig, device: torch.device, deadline: _Deadline
) -> str:
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(0)
    net = _StabilityNet(cand.factory).to(device).train()
    x = torch.randn((cfg.stability_batch, 3, 8, 8), generator=gen).to(device)
    y = torch.randint(0, 10, (cfg.stability_batch,), generator=gen).to(device)
    history: list[float] = []
    method = "gradient ascent"
    for step in range(cfg.stability_steps + 1):
        deadline.check("stability")
        last = step == cfg.stability_steps
        try:
            params, loss, sq = _stability_grad_norm(net, x, y, create_graph=not last)
        except Exception as exc:
            if is_oom(exc):
                raise
            raise _Reject(
                f"forward/backward raised {_describe(exc)} in the stability network"
            ) from exc
        gn = math.sqrt(sq.item()) if torch.isfinite(sq) else float("inf")
        history.append(gn)
        if not math.isfinite(gn) or not torch.isfinite(loss):
            raise _Reject(
                f"gradient norm became non-finite after {step} adversarial step(s) "
                f"(norms {', '.join(f'{h:.3g}' for h in history)})"
            )
        if gn > cfg.stability_max_grad_norm:
            raise _Reject(
                f"adversarial weight changes drive the gradient norm to {gn:.3g} > "
                f"{cfg.stability_max_grad_norm:g} after {step} step(s) (from {history[0]:.3g})"
            )
        if last:
            break
        # ascend: each weight tensor moves by step_size * its own norm along d|g|^2/dw
        try:
            if sq.requires_grad:
                ups = torch.autograd.grad(sq, params, allow_unused=True)
            else:
                ups = [None] * len(params)
        except RuntimeError:
            ups = None  # an op without double backward: fall back to random search
        with torch.no_grad():
            if ups is None or all(u is None for u in ups):
                method = "random search"
                best, best_delta = gn, None
                for _ in range(4):
                    deltas = [
                        torch.randn_like(p)
                        * cfg.stability_step_size
                        * p.norm()
                        / (p.numel() ** 0.5 + 1e-12)
                        for p in params
                    ]
                    for p, d in zip(params, deltas):
                        p.add_(d)
                    with torch.enable_grad():
                        _, _, s2 = _stability_grad_norm(net, x, y, create_graph=False)
                    v = math.sqrt(s2.item()) if torch.isfinite(s2) else float("inf")
                    for p, d in zip(params, deltas):
                        p.sub_(d)
                    if v > best:
                        best, best_delta = v, deltas
                if best_delta is not None:
                    for p, d in zip(params, best_delta):
                        p.add_(d)
            else:
                for p, u in zip(params, ups):
                    if u is None:
                        continue
                    un = u.norm()
                    if torch.isfinite(un) and un > 0:
                        p.add_(u * (cfg.stability_step_size * (p.norm() + 1e-3) / un))
    return (
        f"max gradient norm {max(history):.3g} <= {cfg.stability_max_grad_norm:g} "
        f"over {cfg.stability_steps} adversarial steps ({method})"
    )


def _initial_logits(tr: Any) -> tuple[torch.Tensor, int]:
    """Logits of ``tr``'s network at its current weights on the first training batch, in
    training mode as the training loop runs it, leaving no trace on the run (running
    statistics and random state are restored)."""
    model, ds = tr.model, tr.dataset
    x = ds.train_x[: max(2, min(tr.task.batch_size, ds.num_train))]
    saved = [b.detach().clone() for b in model.buffers()]
    devices = []
    if tr.device.type == "cuda":
        devices = [tr.device.index if tr.device.index is not None else torch.cuda.current_device()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=tr.device.type == "cuda"):
                logits = model(x)
            logits = logits.float()
    finally:
        with torch.no_grad():
            for b, v in zip(model.buffers(), saved):
                b.copy_(v)
    return logits, int(x.shape[0])


def _stage_trainability(tr: Any, cfg: RejectionConfig, train_to: Callable[[Any, int], None]) -> str:
    """The ``trainability`` checks on one proxy's trainer (see the module docstring)."""
    name = tr.task.name
    try:
        logits, n = _initial_logits(tr)
    except Exception as exc:
        if is_oom(exc):
            raise
        raise _Reject(f"forward pass of the {name} network raised {_describe(exc)}") from exc
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).float().mean().item()
        raise _Reject(f"logits at initialisation are not finite ({bad:.0%} NaN/Inf) on {name}")
    scale = logits.abs().mean().item()
    if scale > cfg.trainability_max_logit:
        raise _Reject(
            f"signal explodes through the network: mean |logit| at initialisation {scale:.3g} > "
            f"{cfg.trainability_max_logit:g} on {name}"
        )
    spread = logits.std(dim=0).mean().item() if n > 1 else 0.0
    if spread < cfg.trainability_min_logit_spread:
        raise _Reject(
            f"the network's output ignores its input at initialisation: logit std across {n} "
            f"inputs {spread:.3g} < {cfg.trainability_min_logit_spread:g} on {name}"
        )
    k = min(cfg.trainability_steps, tr.task.steps)
    losses = []
    for step in range(tr.step + 1, k + 1):  # one loss read-back per step
        train_to(tr, step)
        if tr.diverged:
            raise _Reject(f"training diverged (NaN/Inf loss) at step {tr.diverged_step} on {name}")
        losses.append(tr.train_loss)
    trend = f", loss {losses[0]:.3g} -> {losses[-1]:.3g} in {k} steps" if losses else ""
    return f"{name}: logit std {spread:.3g}, mean |logit| {scale:.3g}{trend}"


# --------------------------------------------------------------------------- protocol


def _result(
    status: str, stage: str | None, reason: str, verdicts: list[StageVerdict], **extra
) -> dict[str, Any]:
    out = {
        "status": status,
        "stage": stage,
        "reason": reason,
        "stages": [v.to_dict() for v in verdicts],
        "proxies": [],
        "costs": {"runtime_ratio": None, "num_params": None},
        "fingerprint": None,
    }
    out.update(extra)
    return out


def evaluate_candidate(
    graph_dict: Any,
    proxies: list[dict[str, Any]],
    config: dict[str, Any] | RejectionConfig | None = None,
    *,
    seen: Callable[[str], dict[str, Any] | None] | None = None,
    device: str | torch.device = "cpu",
    datasets_cache: DatasetCache | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the rejection protocol and, for survivors, the full evaluation. Never raises.

    Returns a JSON-safe dict: ``status`` (``"completed"``, ``"rejected"`` or ``"failed"``),
    ``stage`` (where it stopped; ``"full"`` when completed, ``"duplicate"`` when an earlier
    result was reused), ``reason``, ``stages`` (``[{name, seconds, passed, reason}]`` in order),
    ``proxies`` (one :meth:`TrainResult.to_dict` per proxy), ``costs``
    (``{runtime_ratio, num_params}``), ``fingerprint`` and ``latex`` (the formula, None when
    the graph has none: computed here, where it costs a few ms beside a training run, so the
    service never has to). A reused duplicate also carries ``duplicate_of`` (the earlier
    result's fingerprint) and ``reused: true``, with the earlier result's status, proxies and
    costs.
    """
    from layerforge.grammar import formula_latex

    result = _evaluate(
        graph_dict,
        proxies,
        config,
        seen=seen,
        device=device,
        datasets_cache=datasets_cache,
        progress=progress,
    )
    try:
        graph = resolve_candidate(graph_dict).graph
    except Exception:  # noqa: BLE001 - the result already says why the candidate is unusable
        graph = None
    result["latex"] = None if graph is None else formula_latex(graph)
    return result


def _evaluate(
    graph_dict: Any,
    proxies: list[dict[str, Any]],
    config: dict[str, Any] | RejectionConfig | None,
    *,
    seen: Callable[[str], dict[str, Any] | None] | None,
    device: str | torch.device,
    datasets_cache: DatasetCache | None,
    progress: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    verdicts: list[StageVerdict] = []
    device = torch.device(device)
    try:
        cfg = (
            RejectionConfig.from_dict(config) if not isinstance(config, RejectionConfig) else config
        )
        tasks = [ProxyTask.from_dict(p) for p in (proxies or [])]
    except (WorkersError, ValueError, TypeError) as exc:
        return _result("failed", None, f"bad input: {exc}", verdicts)
    if not tasks and ("quality" in cfg.stages or "full" in cfg.stages):
        return _result("failed", None, "bad input: no proxies to train on", verdicts)
    deadline = _Deadline(cfg.time_limit_s)
    state: dict[str, Any] = {
        "fingerprint": None,
        "costs": {"runtime_ratio": None, "num_params": None},
    }
    trainers: list[Any] = []

    # resolving the candidate is part of the static stage
    cand: Candidate | None = None

    def run_stage(name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        try:
            deadline.check(name)
            reason = fn()
        except _Reject as exc:
            verdicts.append(StageVerdict(name, False, str(exc), time.perf_counter() - t0))
            raise
        except _Fail as exc:
            verdicts.append(StageVerdict(name, False, str(exc), time.perf_counter() - t0))
            raise
        except Exception as exc:
            if is_oom(exc):
                _release_memory(device)
                msg = f"out of memory during {name}: {_describe(exc)}"
                verdicts.append(StageVerdict(name, False, msg, time.perf_counter() - t0))
                raise _Reject(msg) from exc
            raise
        verdicts.append(StageVerdict(name, True, reason, time.perf_counter() - t0))
        if progress is not None:
            progress({"stage": name, "passed": True})

    def static() -> str:
        nonlocal cand
        try:
            cand = resolve_candidate(graph_dict)
        except (WorkersError, ValueError, TypeError, KeyError) as exc:
            raise _Reject(f"not a valid candidate: {exc}") from exc
        if "static" in cfg.stages:
            return _stage_static(cand, cfg)
        return "resolved"

    def probe() -> str:
        return _stage_probe(cand, cfg, device, {t.arch for t in tasks})

    def duplicate() -> str:
        fp = state["fingerprint"]
        earlier = seen(fp) if seen is not None and fp is not None else None
        if earlier is not None:
            state["earlier"] = earlier
            raise _Reject(
                f"functionally identical to an earlier candidate (fingerprint {fp}); its result is reused"
            )
        return f"new fingerprint {fp}"

    def stability() -> str:
        if cand.kind != "normact":
            return "skipped: activation candidates have no stability test"
        return _stage_stability(cand, cfg, device, deadline)

    def build_trainers(*, reject_errors: bool) -> None:
        """One trainer per proxy task. A setup error (bad task, missing dependency) fails the
        evaluation; with ``reject_errors`` any other error (not OOM) rejects the candidate,
        otherwise it propagates (recorded as an unexpected error)."""
        from layerforge.workers.training import make_trainer

        for task in tasks:
            try:
                trainers.append(
                    make_trainer(
                        task,
                        cand.factory,
                        cand.kind,
                        device=device,
                        cache=datasets_cache,
                    )
                )
            except (WorkersError, ImportError) as exc:
                raise _Fail(f"cannot set up proxy {task.name}: {exc}") from exc
            except Exception as exc:
                if not reject_errors or is_oom(exc):
                    raise
                raise _Reject(f"building proxy {task.name} raised {_describe(exc)}") from exc

    def trainability() -> str:
        build_trainers(reject_errors=True)
        return "; ".join(
            _stage_trainability(tr, cfg, lambda t, n: _train_to(t, n, "trainability"))
            for tr in trainers
        )

    def quality() -> str:
        if not trainers:  # trainability stage skipped
            build_trainers(reject_errors=True)
        notes = []
        for tr in trainers:
            q = min(cfg.quality_steps, tr.task.steps)
            _train_to(tr, q, "quality")
            res = tr.result()
            tr.quality_result = res
            if res.diverged:
                raise _Reject(
                    f"training diverged (NaN/Inf loss) at step {res.diverged_step} on {tr.task.name}"
                )
            if res.val_accuracy < cfg.quality_min_accuracy:
                raise _Reject(
                    f"validation accuracy {res.val_accuracy:.3f} < {cfg.quality_min_accuracy:g} "
                    f"on {tr.task.name} after {res.steps} steps"
                )
            notes.append(f"{tr.task.name}: {res.val_accuracy:.3f} after {res.steps} steps")
        return "; ".join(notes)

    def full() -> str:
        if not trainers:  # quality stage skipped
            build_trainers(reject_errors=False)
        notes = []
        for tr in trainers:
            _train_to(tr, tr.task.steps, "full")
            res = tr.result()
            tr.full_result = res
            if res.diverged:
                raise _Reject(
                    f"training diverged (NaN/Inf loss) at step {res.diverged_step} on {tr.task.name}"
                )
            notes.append(f"{tr.task.name}: {res.val_accuracy:.3f} after {res.steps} steps")
        return "; ".join(notes)

    def _train_to(tr, step: int, where: str) -> None:
        remaining = deadline.remaining()
        tr.time_limit_s = None if remaining is None else tr.train_seconds + max(0.0, remaining)
        try:
            tr.run_until(step)
        except Exception as exc:
            if is_oom(exc):
                raise
            raise _Reject(f"training on {tr.task.name} raised {_describe(exc)}") from exc
        if tr.timed_out:
            raise _Reject(
                f"time limit of {cfg.time_limit_s:g}s exceeded during {where} on {tr.task.name}"
            )

    def proxy_results() -> list[dict[str, Any]]:
        out = []
        for tr in trainers:
            res = getattr(tr, "full_result", None) or getattr(tr, "quality_result", None)
            if res is None and tr.step > 0:
                res = tr.result(evaluate=False)
            if res is not None:
                out.append(res.to_dict())
        return out

    stage_fns = {
        "probe": probe,
        "duplicate": duplicate,
        "stability": stability,
        "trainability": trainability,
        "quality": quality,
        "full": full,
    }
    current = "static"
    try:
        run_stage("static", static)
        try:
            state["fingerprint"] = cand.fingerprint()
        except Exception as exc:
            if "probe" not in cfg.stages:
                raise _Reject(f"fingerprint raised {_describe(exc)}") from exc
            state["fingerprint"] = None
        for name in STAGES[1:]:
            if name not in cfg.stages:
                continue
            if name == "stability" and cand.kind != "normact":
                continue
            current = name
            run_stage(name, stage_fns[name])
        if cfg.measure_costs:
            current = "costs"
            try:
                from layerforge.workers.costs import measure_layer_cost

                c = measure_layer_cost(
                    cand.factory,
                    cand.kind,
                    shape=tuple(cfg.cost_shape),
                    repeats=cfg.cost_repeats,
                    device=device,
                )
                state["costs"] = {
                    "runtime_ratio": c["runtime_ratio"],
                    "num_params": c["num_params"],
                }
            except Exception as exc:  # noqa: BLE001 - costs are best effort
                if is_oom(exc):
                    _release_memory(device)
                state["costs"] = {
                    "runtime_ratio": None,
                    "num_params": None,
                    "error": _describe(exc),
                }
        last = verdicts[-1].name if verdicts else None
        return _result(
            "completed",
            last,
            "passed every stage",
            verdicts,
            proxies=proxy_results(),
            costs=state["costs"],
            fingerprint=state["fingerprint"],
        )
    except _Reject as exc:
        earlier = state.get("earlier")
        if earlier is not None:
            return _result(
                earlier.get("status", "completed"),
                "duplicate",
                str(exc),
                verdicts,
                proxies=list(earlier.get("proxies", [])),
                costs=dict(earlier.get("costs") or {"runtime_ratio": None, "num_params": None}),
                fingerprint=state["fingerprint"],
                duplicate_of=earlier.get("fingerprint", state["fingerprint"]),
                reused=True,
            )
        return _result(
            "rejected",
            verdicts[-1].name if verdicts else current,
            str(exc),
            verdicts,
            proxies=proxy_results(),
            fingerprint=state["fingerprint"],
        )
    except _Fail as exc:
        return _result("failed", current, str(exc), verdicts, fingerprint=state["fingerprint"])
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected error: recorded, not raised
        if is_oom(exc):
            _release_memory(device)
            return _result(
                "rejected",
                current,
                f"out of memory: {_describe(exc)}",
                verdicts,
                fingerprint=state["fingerprint"],
            )
        tb = traceback.format_exc(limit=4)
        return _result(
            "failed",
            current,
            f"unexpected error: {_describe(exc)}",
            verdicts,
            fingerprint=state["fingerprint"],
            traceback=tb[-2000:],
        )
    finally:
        trainers.clear()
        _release_memory(device)
