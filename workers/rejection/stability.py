"""The ``stability`` stage (norm-act only): EvoNorm's adversarial gradient-norm test.

In a small convnet built with the candidate, take ``stability_steps`` steps of gradient
*ascent* on the network weights (each tensor moved by ``stability_step_size`` times its own
norm) to maximise the norm of the loss gradient w.r.t. the weights; reject when that norm
exceeds ``stability_max_grad_norm`` or stops being finite. Layers whose ops have no double
backward fall back to a random search over weight perturbations.
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

__all__ = ["StabilityNet", "stability"]


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


@register_stage(Stage.STABILITY)
def stability(run: EvaluationRun) -> str:
    """Reject a norm-act layer whose gradient norm adversarial weight changes can blow up."""
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
