"""Torch runtime helpers used by generated forward code (compile and PyTorch export).

Every function here must be self-contained (only ``torch`` and ``math``): the PyTorch export
copies the source of the helpers a graph uses into a standalone file.  The protected
semantics live here: no helper produces NaN from finite input.
"""

import math

import torch


def _pdiv(a, b):
    """a / b with |b| clamped away from zero (keeping its sign, 0 counts as +)."""
    mag = b.abs().clamp_min(1e-6)
    return a / torch.where(b < 0, -mag, mag)


def _psqrt(a):
    """Sign-preserving square root: sign(a) * sqrt(|a|)."""
    return torch.sign(a) * torch.sqrt(a.abs().clamp_min(1e-12))


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


def _moment(a, kind, dims, eps):
    """One statistic of ``a`` (already upcast) over ``dims``, keepdim."""
    if kind == "mean":
        return a.mean(dim=dims, keepdim=True)
    if kind in ("sqmean", "rms"):
        s = (a * a).mean(dim=dims, keepdim=True)
        return s if kind == "sqmean" else torch.sqrt(s + eps)
    m = a.mean(dim=dims, keepdim=True)
    var = ((a - m) * (a - m)).mean(dim=dims, keepdim=True)
    return var if kind == "var" else torch.sqrt(var + eps)


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
            m = af.mean(dim=dims, keepdim=True)
            stat = ((af - m) * (af - m)).mean(dim=dims)
            n = af.numel() / af.shape[1]
            upd = stat * (n / (n - 1)) if n > 1 else stat
        with torch.no_grad():
            running.copy_(running * (1.0 - momentum) + upd.detach().to(running.dtype) * momentum)
    else:
        stat = running
    if kind in ("std", "rms"):
        stat = torch.sqrt(stat + eps)
    return stat.to(a.dtype).view(1, -1, 1, 1)


def _as_4d(x):
    """(N, C) -> (N, C, 1, 1); (N, C, L) -> (N, C, L, 1); (N, C, H, W) unchanged."""
    if x.dim() == 4:
        return x
    if x.dim() == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.dim() == 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], 1)
    raise ValueError("expected input of shape (N, C), (N, C, L) or (N, C, H, W), got %s" % (tuple(x.shape),))


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
