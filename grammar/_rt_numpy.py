"""NumPy runtime helpers: reference semantics of every op (fingerprint, NumPy export).

Self-contained (only ``numpy`` and ``math``) so the NumPy export can copy the helpers a
graph uses into a standalone file.  Mirrors :mod:`grammar._rt_torch` op for op.
"""

import math

import numpy as np


def _pdiv(a, b):
    """a / b with |b| clamped away from zero (keeping its sign, 0 counts as +)."""
    mag = np.maximum(np.abs(b), 1e-6)
    return a / np.where(b < 0, -mag, mag)


def _psqrt(a):
    """Sign-preserving square root: sign(a) * sqrt(|a|)."""
    return np.sign(a) * np.sqrt(np.maximum(np.abs(a), 1e-12))


def _plog(a):
    """log(|a| + 1e-6)."""
    return np.log(np.abs(a) + 1e-6)


def _pexp(a):
    """exp with the argument clamped at 30."""
    return np.exp(np.minimum(a, 30.0))


def _psinh(a):
    """sinh with the argument clamped to [-30, 30]."""
    return np.sinh(np.clip(a, -30.0, 30.0))


def _pcosh(a):
    """cosh with the argument clamped to [-30, 30]."""
    return np.cosh(np.clip(a, -30.0, 30.0))


def _sinc(a):
    """Unnormalised sinc: sin(a) / a, 1 at 0."""
    return np.sinc(a / np.pi)


def _sigmoid(a):
    """Logistic sigmoid, overflow-free."""
    return np.exp(-np.logaddexp(0.0, -a))


def _softplus(a):
    """log(1 + exp(a)), overflow-free."""
    return np.logaddexp(0.0, a)


_erf_vec = np.vectorize(math.erf, otypes=[float])


def _erf(a):
    """Error function (exact, elementwise math.erf)."""
    return _erf_vec(a)


def _gelu(a):
    """Exact GELU: a * Phi(a)."""
    return 0.5 * a * (1.0 + _erf(a * 0.7071067811865476))


def _elu(a):
    """ELU with alpha 1."""
    return np.where(a > 0, a, np.expm1(np.minimum(a, 0.0)))


def _moment(a, kind, dims, eps):
    """One statistic of ``a`` over ``dims``, keepdims."""
    if kind == "mean":
        return a.mean(axis=dims, keepdims=True)
    if kind in ("sqmean", "rms"):
        s = (a * a).mean(axis=dims, keepdims=True)
        return s if kind == "sqmean" else np.sqrt(s + eps)
    m = a.mean(axis=dims, keepdims=True)
    var = ((a - m) * (a - m)).mean(axis=dims, keepdims=True)
    return var if kind == "var" else np.sqrt(var + eps)


def _stat(a, kind, axis, groups, eps, running=None):
    """Statistic of a 4-D array over batch/instance/group/layer axes (float64).

    With ``running`` (a dict of running values keyed by statistic) a batch statistic is read
    from it instead of the batch (eval mode).
    """
    n, c, h, w = a.shape
    if axis == "instance":
        return _moment(a, kind, (2, 3), eps)
    if axis == "layer":
        return _moment(a, kind, (1, 2, 3), eps)
    if axis == "group":
        g = a.reshape(n, groups, c // groups, h, w)
        out = _moment(g, kind, (2, 3, 4), eps)
        return np.repeat(out.reshape(n, groups, 1), c // groups, axis=2).reshape(n, c, 1, 1)
    if running is not None:
        val = np.asarray(running).reshape(1, -1, 1, 1)
        return np.sqrt(val + eps) if kind in ("std", "rms") else val
    return _moment(a, kind, (0, 2, 3), eps)


def _as_4d(x):
    """(N, C) -> (N, C, 1, 1); (N, C, L) -> (N, C, L, 1); (N, C, H, W) unchanged."""
    x = np.asarray(x)
    if x.ndim == 4:
        return x
    if x.ndim == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.ndim == 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], 1)
    raise ValueError("expected input of shape (N, C), (N, C, L) or (N, C, H, W)")


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
