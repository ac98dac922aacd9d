"""The ``stability`` stage: can changes of the network's weights blow up its gradients?

Norm-act layers get EvoNorm's adversarial gradient-norm test: in a small convnet built with
the candidate, take ``stability_steps`` steps of gradient *ascent* on the network weights
(each tensor moved by ``stability_step_size`` times its own norm) to maximise the norm of the
loss gradient w.r.t. the weights; reject when that norm exceeds ``stability_max_grad_norm`` or
stops being finite. Layers whose ops have no double backward fall back to a random search
over weight perturbations.

Activation functions get the same question asked of a scalar function (:func:`slope_growth`).
Without a normalisation in front of it, an activation sees its pre-activation scaled by the
weights feeding it: weights grown by ``s`` move its inputs from ``x`` to ``s * x``, and the
backward pass multiplies by ``f'(s * x)``. A function whose slope is bounded (ReLU, the Swish
family, tanh) keeps that factor bounded whatever the weights do; one whose slope keeps growing
with ``|x|`` (``x^2``, ``x * asinh(x)``, ``exp``) lets weight growth raise the gradient without
bound, and such functions diverge in deeper or longer runs even where a short shallow proxy
rates them highly (benchmarks/RESULTS.md, B9: ``x - x^2`` scored 84.8% against ReLU's 78.4% on
the 2x128 search MLP and diverged within 50 steps on the 3-layer held-out MLP). The stage
rejects an activation whose largest slope over ``|x| <= stability_slope_far`` exceeds its
largest slope over ``|x| <= stability_slope_near`` (where unit-variance pre-activations live)
by more than ``stability_max_slope_growth`` times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from layerforge.workers.rejection.config import RejectionConfig, Stage
from layerforge.workers.rejection.registry import register_stage
from layerforge.workers.rejection.run import EvaluationRun, Reject, describe, is_oom

__all__ = ["StabilityNet", "slope_growth", "stability"]


class StabilityNet(nn.Module):
    """``conv -> candidate -> conv -> candidate -> pool -> fc``: the network the test attacks."""

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


def _grad_norm_sq(net: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool):
    """The trainable parameters, the loss, and the squared norm of its weight gradient."""
    params = [p for p in net.parameters() if p.requires_grad]
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    sq = sum((g.float() ** 2).sum() for g in grads if g is not None)
    return params, loss, torch.as_tensor(sq)


def slope_growth(
    factory: Callable[[int], nn.Module], near: float, far: float, points: int = 8193
) -> tuple[float, float]:
    """The largest ``|f'(x)|`` of an elementwise layer over ``|x| <= near`` and over
    ``|x| <= far`` (autograd on a dense grid; a non-finite slope gives ``inf``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = factory(points)
    layer.train()
    x = torch.linspace(-far, far, points).reshape(1, -1).requires_grad_(True)
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    slope = torch.zeros_like(x) if g is None else g.detach().abs().reshape(-1).double()
    slope = torch.where(torch.isfinite(slope), slope, torch.full_like(slope, math.inf))
    inside = x.detach().reshape(-1).abs() <= near
    return float(slope[inside].max()), float(slope.max())


def _activation_stability(run: EvaluationRun) -> str:
    """Reject an activation whose slope grows with its input's magnitude (module docstring)."""
    cfg = run.config
    near, far = cfg.stability_slope_near, cfg.stability_slope_far
    try:
        g_near, g_far = slope_growth(run.factory, near, far)
    except Exception as exc:
        if is_oom(exc):
            raise
        raise Reject(f"forward/backward raised {describe(exc)} on |x| <= {far:g}") from exc
    if not math.isfinite(g_far):
        raise Reject(f"the slope is not finite for some |x| <= {far:g}")
    growth = g_far / g_near if g_near > 0 else math.inf
    if growth > cfg.stability_max_slope_growth:
        raise Reject(
            f"the slope grows with the input: max |f'| is {g_far:.3g} over |x| <= {far:g} "
            f"against {g_near:.3g} over |x| <= {near:g} ({growth:.3g}x > "
            f"{cfg.stability_max_slope_growth:g}x), so growing weights can drive the gradient "
            "norm without bound"
        )
    return (
        f"slope bounded: max |f'| {g_far:.3g} over |x| <= {far:g}, {g_near:.3g} over "
        f"|x| <= {near:g} ({growth:.3g}x <= {cfg.stability_max_slope_growth:g}x)"
    )


@register_stage(Stage.STABILITY)
def stability(run: EvaluationRun) -> str:
    """Reject a layer whose gradient norm changes of the network's weights can blow up: the
    adversarial test for norm-act layers, the slope-growth test for activations."""
    if run.cand.kind == "activation":
        return _activation_stability(run)
    cfg, device = run.config, run.device
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(0)
    net = StabilityNet(run.factory).to(device).train()
    x = torch.randn((cfg.stability_batch, 3, 8, 8), generator=gen).to(device)
    y = torch.randint(0, 10, (cfg.stability_batch,), generator=gen).to(device)
    history: list[float] = []
    method = "gradient ascent"
    for step in range(cfg.stability_steps + 1):
        run.deadline.check("stability")
        last = step == cfg.stability_steps
        try:
            params, loss, sq = _grad_norm_sq(net, x, y, create_graph=not last)
        except Exception as exc:
            if is_oom(exc):
                raise
            raise Reject(
                f"forward/backward raised {describe(exc)} in the stability network"
            ) from exc
        gn = math.sqrt(sq.item()) if torch.isfinite(sq) else float("inf")
        history.append(gn)
        if not math.isfinite(gn) or not torch.isfinite(loss):
            raise Reject(
                f"gradient norm became non-finite after {step} adversarial step(s) "
                f"(norms {', '.join(f'{h:.3g}' for h in history)})"
            )
        if gn > cfg.stability_max_grad_norm:
            raise Reject(
                f"adversarial weight changes drive the gradient norm to {gn:.3g} > "
                f"{cfg.stability_max_grad_norm:g} after {step} step(s) (from {history[0]:.3g})"
            )
        if last:
            break
        try:
            ups = (
                list(torch.autograd.grad(sq, params, allow_unused=True))
                if sq.requires_grad
                else [None] * len(params)
            )
        except RuntimeError:
            ups = None  # an op without double backward: fall back to random search
        with torch.no_grad():
            if ups is None or all(u is None for u in ups):
                method = "random search"
                _random_step(net, params, x, y, gn, cfg)
            else:
                _ascent_step(params, ups, cfg)
    return (
        f"max gradient norm {max(history):.3g} <= {cfg.stability_max_grad_norm:g} "
        f"over {cfg.stability_steps} adversarial steps ({method})"
    )


def _ascent_step(
    params: list[torch.Tensor], ups: list[torch.Tensor | None], cfg: RejectionConfig
) -> None:
    """Move each weight tensor by ``step_size`` times its norm along d|g|^2/dw."""
    for p, u in zip(params, ups, strict=True):
        if u is None:
            continue
        un = u.norm()
        if torch.isfinite(un) and un > 0:
            p.add_(u * (cfg.stability_step_size * (p.norm() + 1e-3) / un))


def _random_step(
    net: nn.Module,
    params: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    current: float,
    cfg: RejectionConfig,
) -> None:
    """Keep the best of four random perturbations (of the ascent's size) if it raises the
    gradient norm."""
    best, best_delta = current, None
    for _ in range(4):
        deltas = [
            torch.randn_like(p) * cfg.stability_step_size * p.norm() / (p.numel() ** 0.5 + 1e-12)
            for p in params
        ]
        for p, d in zip(params, deltas, strict=True):
            p.add_(d)
        with torch.enable_grad():
            _, _, s2 = _grad_norm_sq(net, x, y, create_graph=False)
        v = math.sqrt(s2.item()) if torch.isfinite(s2) else float("inf")
        for p, d in zip(params, deltas, strict=True):
            p.sub_(d)
        if v > best:
            best, best_delta = v, deltas
    if best_delta is not None:
        for p, d in zip(params, best_delta, strict=True):
            p.add_(d)
