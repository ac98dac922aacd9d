"""The cheap stages on the layer alone: ``static``, ``probe`` and ``duplicate``."""

from __future__ import annotations

from typing import Any

import torch

from layerforge.workers.candidates import resolve_candidate
from layerforge.workers.errors import WorkersError
from layerforge.workers.rejection.config import RejectionConfig, Stage
from layerforge.workers.rejection.registry import register_stage
from layerforge.workers.rejection.run import EvaluationRun, Fail, Reject, describe, is_oom


@register_stage(Stage.STATIC)
def static(run: EvaluationRun) -> str:
    """Resolve the candidate; with the static stage on, check it against the campaign's
    space (depends on x, within the size limits, only allowed ops)."""
    try:
        run.candidate = resolve_candidate(run.candidate_spec)
    except (WorkersError, ValueError, TypeError, KeyError) as exc:
        raise Reject(f"not a valid candidate: {exc}") from exc
    if Stage.STATIC not in run.config.stages:
        return "resolved"
    cand = run.candidate
    if cand.graph is None:
        return "no graph (a torch factory); nothing to check statically"
    from layerforge.grammar import GrammarError, check_static, make_space

    try:
        space = make_space(cand.kind, **run.config.space)
    except (GrammarError, TypeError) as exc:
        raise Fail(f"bad space setting: {exc}") from exc
    try:
        check_static(cand.graph, space)
    except GrammarError as exc:
        raise Reject(str(exc)) from exc
    return "ok"


def probe_shapes(run: EvaluationRun) -> list[tuple[int, ...]]:
    """The probe tensors' shapes: images, plus the ranks the job's MLPs (N, C) and
    transformers (N, C, L) feed a norm-act layer."""
    cfg = run.config
    n, c, s = cfg.probe_batch, cfg.probe_channels, cfg.probe_size
    shapes: list[tuple[int, ...]] = [(n, c, s, s)]
    if run.cand.kind == "activation":
        return shapes
    if "mlp" in run.archs:
        shapes.append((n * s, c))
    if "transformer" in run.archs:
        shapes.append((n, c, s * s))
    return shapes


@register_stage(Stage.PROBE)
def probe(run: EvaluationRun) -> str:
    """Forward and backward on probe batches (unit scale and large, training and eval mode):
    outputs and input gradients finite; on the unit scale, output not constant, gradient not
    zero everywhere, magnitudes under ``probe_max_output`` / ``probe_max_grad``."""
    cfg, device = run.config, run.device
    gen = torch.Generator().manual_seed(7)
    notes = []
    for shape in probe_shapes(run):
        torch.manual_seed(0)
        layer = run.factory(shape[1]).to(device)
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
                raise Reject(f"forward raised {describe(exc)} on {where}") from exc
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                raise Reject(
                    f"output shape {getattr(y, 'shape', None)} differs from input shape {tuple(shape)}"
                )
            yd = y.detach().float()
            if not torch.isfinite(yd).all():
                bad = (~torch.isfinite(yd)).float().mean().item()
                raise Reject(f"output is not finite (NaN/Inf in {bad:.0%} of values) on {where}")
            try:
                (gx,) = torch.autograd.grad(y, x, cot, allow_unused=True)
            except Exception as exc:
                if is_oom(exc):
                    raise
                raise Reject(f"backward raised {describe(exc)} on {where}") from exc
            gx = torch.zeros_like(x) if gx is None else gx.detach().float()
            if not torch.isfinite(gx).all():
                raise Reject(f"gradient w.r.t. the input is not finite on {where}")
            if scale == min(cfg.probe_scales):
                _check_unit_scale(yd, gx, where, cfg)
        layer.eval()  # running statistics must give finite outputs too
        with torch.no_grad():
            x = torch.randn(shape, generator=gen).to(device)
            try:
                y = layer(x)
            except Exception as exc:
                if is_oom(exc):
                    raise
                raise Reject(f"eval-mode forward raised {describe(exc)} on {tuple(shape)}") from exc
            if not torch.isfinite(y.float()).all():
                raise Reject(f"eval-mode output is not finite on {tuple(shape)}")
        notes.append(str(tuple(shape)))
    if run.cand.kind == "normact" and cfg.probe_min_nonlinearity > 0:
        shape = probe_shapes(run)[0]
        deviation = nonlinearity(run.factory, shape, device)
        if deviation < cfg.probe_min_nonlinearity:
            raise Reject(
                f"the layer is affine in its input (deviation from affinity {deviation:.2g} < "
                f"{cfg.probe_min_nonlinearity:g} at initial and random parameters): every "
                "network built from it is linear"
            )
        notes.append(f"nonlinearity {deviation:.2g}")
    return (
        f"finite, non-constant, non-zero gradient on {', '.join(notes)} at scales "
        f"{cfg.probe_scales}"
    )


def nonlinearity(factory: Any, shape: tuple[int, ...], device: Any = "cpu") -> float:
    """How far a layer is from an affine map of its whole input tensor: the relative gap
    ``|f(a x1 + (1-a) x2) - (a f(x1) + (1-a) f(x2))| / |f|`` on unit-normal probes, in
    float64 and training mode, the smaller of the gaps at the layer's initial parameters and
    at random ones (the largest, so that a layer affine only at its initial parameter
    values, ``x * v1 + tanh(v0 * x)`` with ``v0 = 0``, is not called affine).

    A norm-act layer that is affine in its input (``x * weight + bias``, ``(v1 + x) *
    weight + bias``) makes every proxy network linear: it neither normalizes nor activates.
    0 (up to rounding) for such layers; of order 0.1-1 for normalizers and activations."""
    gen = torch.Generator().manual_seed(11)
    x1 = torch.randn(shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(shape, generator=gen, dtype=torch.float64)
    a = 0.3
    gaps = []
    for randomize in (False, True):
        torch.manual_seed(0)
        layer = factory(shape[1]).to(device=device, dtype=torch.float64)
        layer.train()
        if randomize:
            with torch.no_grad():
                for p in layer.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        with torch.no_grad():
            ys = [layer(x.to(device)) for x in (x1, x2, a * x1 + (1 - a) * x2)]
        mixed = a * ys[0] + (1 - a) * ys[1]
        scale = max(ys[0].abs().mean().item(), ys[1].abs().mean().item(), 1e-12)
        gaps.append((ys[2] - mixed).abs().mean().item() / scale)
    return max(gaps)


def _check_unit_scale(y: torch.Tensor, gx: torch.Tensor, where: str, cfg: RejectionConfig) -> None:
    """The unit-scale probe's checks: not constant, gradient not zero, magnitudes bounded."""
    top = y.abs().max().item()
    spread = (y.max() - y.min()).item()
    if spread <= cfg.probe_min_range * (1.0 + top):
        raise Reject(f"output is constant (always {y.flatten()[0].item():.4g}) on {where}")
    gmax = gx.abs().max().item()
    if gmax <= 1e-12:
        raise Reject(f"gradient w.r.t. the input is zero everywhere on {where}")
    if top > cfg.probe_max_output:
        raise Reject(f"output magnitude {top:.3g} exceeds {cfg.probe_max_output:g} on {where}")
    if gmax > cfg.probe_max_grad:
        raise Reject(
            f"gradient w.r.t. the input explodes: {gmax:.3g} > {cfg.probe_max_grad:g} on {where}"
        )


@register_stage(Stage.DUPLICATE)
def duplicate(run: EvaluationRun) -> str:
    """Reuse the result of an earlier candidate with the same functional fingerprint."""
    fp = run.fingerprint
    earlier = run.seen(fp) if run.seen is not None and fp is not None else None
    if earlier is not None:
        run.earlier = earlier
        raise Reject(
            f"functionally identical to an earlier candidate (fingerprint {fp}); its result is reused"
        )
    return f"new fingerprint {fp}"
