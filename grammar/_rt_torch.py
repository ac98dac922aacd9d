"""Torch runtime helpers used by generated forward code (compile and PyTorch export).

Every function and class here must be self-contained (only ``torch`` and ``math``): the
PyTorch export copies the source of the helpers a graph uses into a standalone file.  The
protected semantics live here: no helper produces NaN from finite input.

Speed (eager CPU, where every full-size temporary counts: a fresh allocation costs page
faults, more than the arithmetic): the helpers below (``_batch_norm`` / ``_group_norm`` for
the normalisation pattern, ``_CenteredStd`` for the std / var statistics, ``_Extremum`` for
max / min, ``_div_positive`` / ``_Divide`` for a denominator known to be positive,
``_affine``, ``_sigmoid_gate``, and the protected ``_pdiv`` / ``_psqrt`` themselves) compute
the grammar's values with fewer full-size passes and temporaries and without ``torch.where``
/ ``masked_fill`` (slow on CPU); every backward stays differentiable (double backward works).
"""

import math

import torch


class _ProtectedDivide(torch.autograd.Function):
    """``a / b`` with ``|b|`` clamped to >= 1e-6, sign kept (0 and -0 count as +), computed
    without ``torch.where``: the denominator is ``copysign(max(|b|, 1e-6), b + 0.0)``
    (``-0.0 + 0.0`` is ``+0.0``) and the gradient of ``b`` is masked by ``|b| > 1e-6`` through
    one threshold kernel (the clamp's kink at exactly 1e-6 aside, the same gradient)."""

    @staticmethod
    def forward(ctx, a, b):
        sign_source = b + 0.0
        denom = sign_source.abs().clamp_min_(1e-6).copysign_(sign_source)
        del sign_source
        out = a / denom
        ctx.save_for_backward(a, b, denom, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, denom, out = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if torch.is_grad_enabled():  # double backward: differentiable, from the inputs
            mag = b.abs().clamp_min(1e-6)
            denom = torch.where(b < 0, -mag, mag)
            grad_a = grad / denom
            grad_b = -(grad_a * a / denom) * (b.abs() >= 1e-6).to(grad.dtype)
            return grad_a.sum_to_size(a.shape), grad_b.sum_to_size(b.shape)
        grad_a = grad / denom
        grad_b = None
        if need_b:
            quotient_grad = (grad_a * out).expand_as(grad)
            grad_b = torch.ops.aten.threshold_backward(quotient_grad, b.abs().expand_as(grad), 1e-6)
            grad_b = grad_b.sum_to_size(b.shape).neg_()
        return (grad_a.sum_to_size(a.shape) if need_a else None), grad_b


def _pdiv(a, b):
    """a / b with |b| clamped away from zero (keeping its sign, 0 counts as +)."""
    return _ProtectedDivide.apply(a, b)


class _Divide(torch.autograd.Function):
    """``a / b`` with a leaner backward than autograd's (``grad / b`` once, then the gradient of
    ``b`` from the saved quotient: two full-size passes instead of five)."""

    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out)
        ctx.a_shape = a.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        b, out = ctx.saved_tensors
        grad_a = grad / b
        grad_b = None
        if ctx.needs_input_grad[1]:
            grad_b = (grad_a * out).sum_to_size(b.shape)
            # in place only when no graph of the backward is recorded (no double backward)
            grad_b = grad_b.neg() if torch.is_grad_enabled() else grad_b.neg_()
        return grad_a.sum_to_size(ctx.a_shape), grad_b


def _div_positive(a, b, floor):
    """The protected division ``_pdiv`` of ``a`` by ``b``, for ``b`` known to be >= ``floor`` >= 0.

    The sign test of ``_pdiv`` is then void and its clamp at 1e-6 is a no-op once ``floor``
    is clearly above 1e-6 (float rounding margin): ``a / b``, else ``a / b.clamp_min(1e-6)``.
    """
    return _Divide.apply(a, b if floor >= 1e-5 else b.clamp_min(1e-6))


class _Extremum(torch.autograd.Function):
    """``torch.maximum(a, b)`` (``largest``) or ``torch.minimum(a, b)`` with a cheaper backward
    (one threshold mask instead of ``where`` / ``masked_fill``); at ties the gradient goes to ``a``."""

    @staticmethod
    def forward(ctx, a, b, largest):
        ctx.save_for_backward(a, b)
        ctx.largest = largest
        return torch.maximum(a, b) if largest else torch.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        margin = (b - a) if ctx.largest else (a - b)  # > 0 exactly where b is the result
        grad_b = torch.ops.aten.threshold_backward(grad, margin.expand_as(grad), 0)
        if margin.shape == grad.shape and not torch.is_grad_enabled():
            grad_a = torch.sub(grad, grad_b, out=margin)  # reuse the buffer
        else:
            grad_a = grad - grad_b
        return grad_a.sum_to_size(a.shape), grad_b.sum_to_size(b.shape), None


def _maximum(a, b):
    """Elementwise max(a, b) (gradient to ``a`` at ties)."""
    return _Extremum.apply(a, b, True)


def _minimum(a, b):
    """Elementwise min(a, b) (gradient to ``a`` at ties)."""
    return _Extremum.apply(a, b, False)


class _Affine(torch.autograd.Function):
    """``a * scale + shift`` in one pass (``torch.addcmul``); the backward is autograd's."""

    @staticmethod
    def forward(ctx, a, scale, shift):
        ctx.save_for_backward(a, scale)
        ctx.shift_shape = shift.shape
        return torch.addcmul(shift, a, scale)

    @staticmethod
    def backward(ctx, grad):
        a, scale = ctx.saved_tensors
        need_a, need_scale, need_shift = ctx.needs_input_grad
        grad_a = (grad * scale).sum_to_size(a.shape) if need_a else None
        grad_scale = (grad * a).sum_to_size(scale.shape) if need_scale else None
        grad_shift = grad.sum_to_size(ctx.shift_shape) if need_shift else None
        return grad_a, grad_scale, grad_shift


def _affine(a, scale, shift):
    """``a * scale + shift`` (one forward pass instead of two)."""
    return _Affine.apply(a, scale, shift)


class _SigmoidGate(torch.autograd.Function):
    """``a * sigmoid(beta * a)`` (Swish with a trainable ``beta``, EvoNorm-S0's numerator) with
    two full-size temporaries in the forward and three in the backward instead of six."""

    @staticmethod
    def forward(ctx, a, beta):
        gate = torch.mul(beta, a).sigmoid_()
        ctx.save_for_backward(a, beta, gate)
        return a * gate

    @staticmethod
    def backward(ctx, grad):
        a, beta, gate = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiable, from the inputs
            gate = torch.sigmoid(beta * a)
            grad_gate = grad * a * gate * (1 - gate)
            return grad * gate + grad_gate * beta, (grad_gate * a).sum_to_size(beta.shape)
        grad_a = grad * gate
        grad_gate = grad_a * a  # grad * a * gate ...
        grad_gate.addcmul_(grad_gate, gate, value=-1.0)  # ... * (1 - gate)
        grad_beta = (grad_gate * a).sum_to_size(beta.shape) if ctx.needs_input_grad[1] else None
        return grad_a.addcmul_(grad_gate, beta), grad_beta


def _sigmoid_gate(a, beta):
    """``a * sigmoid(beta * a)``."""
    return _SigmoidGate.apply(a, beta)


class _SignedSqrt(torch.autograd.Function):
    """``sign(a) * sqrt(max(|a|, 1e-12))`` with two full-size temporaries instead of five;
    gradient ``0.5 / sqrt(|a|)`` where ``|a| > 1e-12``, else 0 (as the composite's, the clamp's
    kink at exactly 1e-12 aside)."""

    @staticmethod
    def forward(ctx, a):
        root = a.abs().clamp_min_(1e-12).sqrt_()
        ctx.save_for_backward(a, root)
        return torch.sign(a).mul_(root)

    @staticmethod
    def backward(ctx, grad):
        a, root = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiable, from the input
            root = torch.sqrt(a.abs().clamp_min(1e-12))
            return grad * 0.5 / root * (a.abs() >= 1e-12).to(grad.dtype)
        grad_a = (grad * 0.5).div_(root)
        return torch.ops.aten.threshold_backward(grad_a, a.abs(), 1e-12)


def _psqrt(a):
    """Sign-preserving square root: sign(a) * sqrt(|a|)."""
    return _SignedSqrt.apply(a)


def _plog(a):
    """log(|a| + 1e-6)."""
    return torch.log(a.abs() + 1e-6)


def _pexp(a):
    """exp with the argument clamped at 30 (no overflow in float32/bfloat16)."""
    return torch.exp(a.clamp(max=30.0))


def _psinh(a):
    """sinh with the argument clamped to [-30, 30]."""
    return torch.sinh(a.clamp(-30.0, 30.0))


def _pcosh(a):
    """cosh with the argument clamped to [-30, 30]."""
    return torch.cosh(a.clamp(-30.0, 30.0))


def _sinc(a):
    """Unnormalised sinc: sin(a) / a, 1 at 0."""
    return torch.sinc(a / math.pi)


def _upcast(a):
    """Statistics are computed in at least float32."""
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


class _CenteredStd(torch.autograd.Function):
    """Biased variance (``eps is None``) or ``sqrt(var + eps)`` of ``a`` over ``dims``, keepdim.

    Same arithmetic as ``mean((a - mean(a))^2)``; the backward is the closed form
    ``(a - mean(a)) * grad / (n * std)`` (``2 (a - mean(a)) * grad / n`` for the variance): one
    full-size pass instead of autograd's six or so.  It recomputes ``a - mean(a)`` from ``a``
    so that double backward is exact.
    """

    @staticmethod
    def forward(ctx, a, dims, eps):
        d = a - a.mean(dim=dims, keepdim=True)
        var = d.mul_(d).mean(dim=dims, keepdim=True)
        out = var if eps is None else torch.sqrt(var + eps)
        ctx.dims, ctx.eps = dims, eps
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        n = a.numel() // out.numel()
        d = a - a.mean(dim=ctx.dims, keepdim=True)
        scale = grad * (2.0 / n) if ctx.eps is None else grad / (out * n)
        return (d * scale if torch.is_grad_enabled() else d.mul_(scale)), None, None


def _moment(a, kind, dims, eps):
    """One statistic of ``a`` (already upcast) over ``dims``, keepdim."""
    if kind == "mean":
        return a.mean(dim=dims, keepdim=True)
    if kind in ("sqmean", "rms"):
        s = (a * a).mean(dim=dims, keepdim=True)
        return s if kind == "sqmean" else torch.sqrt(s + eps)
    return _CenteredStd.apply(a, dims, None if kind == "var" else eps)


def _stat(a, kind, axis, groups, eps):
    """Statistic of a 4-D tensor over instance (H,W), group (C/g,H,W), layer (C,H,W) axes.

    Computed in at least float32 and cast back to ``a.dtype``; result broadcasts to ``a``.
    """
    n, c, h, w = a.shape
    af = _upcast(a)
    if axis == "instance":
        out = _moment(af, kind, (2, 3), eps)
    elif axis == "layer":
        out = _moment(af, kind, (1, 2, 3), eps)
    elif axis == "group":
        g = af.reshape(n, groups, c // groups, h, w)
        out = _moment(g, kind, (2, 3, 4), eps)
        out = out.reshape(n, groups, 1).expand(n, groups, c // groups).reshape(n, c, 1, 1)
    else:
        out = _moment(af, kind, (0, 2, 3), eps)
    return out.to(a.dtype)


def _batch_stat(a, kind, running, training, momentum, eps):
    """Batch (N,H,W) statistic with a running estimate used in eval mode.

    Training: the statistic of the batch; the running buffer gets an EMA update
    (variance buffers take the unbiased n/(n-1) estimate, as BatchNorm and timm do).
    Eval: the running buffer.  mean -> running mean; var/std -> running variance;
    sqmean/rms -> running second moment.
    """
    if training:
        af = _upcast(a)
        dims = (0, 2, 3)
        if kind == "mean":
            stat = af.mean(dim=dims)
            upd = stat
        elif kind in ("sqmean", "rms"):
            stat = (af * af).mean(dim=dims)
            upd = stat
        else:
            stat = _CenteredStd.apply(af, dims, None).view(-1)
            n = af.numel() / af.shape[1]
            upd = stat * (n / (n - 1)) if n > 1 else stat
        with torch.no_grad():
            running.copy_(running * (1.0 - momentum) + upd.detach().to(running.dtype) * momentum)
    else:
        stat = running
    if kind in ("std", "rms"):
        stat = torch.sqrt(stat + eps)
    return stat.to(a.dtype).view(1, -1, 1, 1)


def _batch_norm(a, running_mean, running_var, weight, bias, training, momentum, eps):
    """``(a - mean(a, batch)) / std(a, batch)``, then ``* weight`` and ``+ bias`` when given
    ((C,) tensors or None), with the running statistics of ``_batch_stat``.

    One fused ``F.batch_norm`` (same statistics, eps, momentum and unbiased running-variance
    update) whenever that is exact: float32/float64 input of the buffers' dtype (lower
    precisions take the grammar's float32-statistics path), std >= sqrt(eps) >= 1e-5 so that the
    protected division is plain, and more than one value per channel in training.
    """
    per_channel = a.numel() // a.shape[1]
    if (
        eps >= 1e-10
        and a.dtype in (torch.float32, torch.float64)
        and a.dtype == running_mean.dtype
        and a.dtype == running_var.dtype
        and (per_channel > 1 or not training)
    ):
        return torch.nn.functional.batch_norm(
            a, running_mean, running_var, weight, bias, training, momentum, eps
        )
    mean = _batch_stat(a, "mean", running_mean, training, momentum, eps)
    std = _batch_stat(a, "std", running_var, training, momentum, eps)
    out = _pdiv(a - mean, std)
    if weight is not None:
        out = out * weight.view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _group_norm(a, axis, groups, weight, bias, eps):
    """``(a - mean(a, axis)) / std(a, axis)``, then ``* weight`` and ``+ bias`` when given, for
    axis instance, group or layer: one ``F.group_norm`` (C, ``groups`` or 1 groups) whenever
    that is exact (float32/float64 input, std >= sqrt(eps) >= 1e-5), else the grammar's ops."""
    if eps >= 1e-10 and a.dtype in (torch.float32, torch.float64):
        count = {"instance": a.shape[1], "group": groups, "layer": 1}[axis]
        return torch.nn.functional.group_norm(a, count, weight, bias, eps)
    out = _pdiv(a - _stat(a, "mean", axis, groups, eps), _stat(a, "std", axis, groups, eps))
    if weight is not None:
        out = out * weight.view(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _as_4d(x):
    """(N, C) -> (N, C, 1, 1); (N, C, L) -> (N, C, L, 1); (N, C, H, W) unchanged."""
    if x.dim() == 4:
        return x
    if x.dim() == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.dim() == 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], 1)
    raise ValueError(
        f"expected input of shape (N, C), (N, C, L) or (N, C, H, W), got {tuple(x.shape)}"
    )


def _resolve_groups(num_features, groups=32, group_size=None):
    """Group count that divides num_features (timm-style, shrinking when it does not)."""
    if group_size:
        gs = max(1, min(int(group_size), num_features))
        while num_features % gs:
            gs -= 1
        return num_features // gs
    g = max(1, min(int(groups), num_features))
    while num_features % g:
        g -= 1
    return g
