"""Telling candidates apart: functional fingerprint (both spaces) and canonical key.

:func:`fingerprint` runs the graph's NumPy reference semantics on fixed probe inputs
(float64, fixed seed) and hashes the outputs rounded to 6 significant digits (AutoML-Zero's
functional equivalence check), so ``x*sigmoid(x)``, ``sigmoid(x)*x`` and ``x/(1+exp(-x))``
share one fingerprint.  Trainable parameters are evaluated twice: at their init values and at
a fixed perturbation, so that ``x*sigmoid(beta*x)`` (trainable) is not merged with
``x*sigmoid(x)`` and EvoNorm-S0 is not merged with S1.  Normact probes use a (4, 8, 4, 4)
tensor in training mode (batch statistics) with 2 groups for the group axis; the graph's eps
and groups options are hashed too.

:func:`canonical_key` (activation) simplifies the SymPy form under a time budget and hashes it.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from typing import Any

import numpy as np

from . import _rt_numpy as rn
from .graph import Graph, param_init
from .ops import ACTIVATION, NORMACT, OPS

_rng = np.random.default_rng(20240611)
ACT_PROBE = np.concatenate([_rng.standard_normal(48) * 2.5, np.linspace(-6.0, 6.0, 16) + 0.0123])
_N, _C, _H, _W = 4, 8, 4, 4
NORM_PROBE = (
    _rng.standard_normal((_N, _C, _H, _W)) * _rng.uniform(0.5, 2.0, (1, _C, 1, 1))
    + _rng.standard_normal((1, _C, 1, 1))
    + 0.3 * _rng.standard_normal((_N, 1, 1, 1))
)
PROBE_GROUPS = 2
_ACT_PERTURB = {
    f"beta{s}": 0.5 + 0.11 * k for k, s in enumerate([""] + [str(i) for i in range(1, 10)])
}
_NORM_INIT = {
    "v0": np.zeros((1, _C, 1, 1)),
    "v1": np.ones((1, _C, 1, 1)),
    "weight": np.ones((1, _C, 1, 1)),
    "bias": np.zeros((1, _C, 1, 1)),
}
_NORM_PERTURB = {k: v + 0.4 * _rng.standard_normal(v.shape) for k, v in _NORM_INIT.items()}


def evaluate_numpy(
    graph: Graph,
    x: np.ndarray,
    params: dict | None = None,
    groups: int | None = None,
    running: dict | None = None,
) -> np.ndarray:
    """Evaluate ``graph`` on ``x`` with the NumPy reference semantics (an interpreter).

    ``params`` maps parameter names to values (default: init values; normact per-channel
    arrays of shape (1, C, 1, 1)).  Normact ``x`` is (N, C, H, W); statistics use ``groups``
    (default: the graph's, shrunk to divide C) and batch statistics come from the batch unless
    ``running`` maps batch node indices to running values (eval mode).
    """
    nodes, live = graph.nodes, graph.live
    vals: list[Any] = [None] * len(nodes)
    params = params or {}
    if graph.space == NORMACT:
        c = x.shape[1]
        g = rn._resolve_groups(c, graph.groups if groups is None else groups)
    for i, n in enumerate(nodes):
        if not live[i]:
            continue
        op = n.op
        v: Any
        if op == "x":
            v = x
        elif op == "const":
            v = n.value
        elif op == "param":
            v = params.get(str(n.name))
            if v is None:
                init = param_init(graph.space, str(n.name))
                v = init if graph.space == ACTIVATION else np.full((1, x.shape[1], 1, 1), init)
        else:
            spec = OPS[op]
            args = [vals[j] for j in n.inputs]
            if spec.aggregate:
                a = args[0]
                if np.shape(a) != x.shape:
                    a = np.broadcast_to(a, x.shape)
                run = None if running is None or n.axis != "batch" else running.get(i)
                v = rn._stat(a, op, n.axis, g, graph.eps, run)
            else:
                v = spec.numpy(*args)
        vals[i] = v
    out = vals[-1]
    if np.shape(out) != x.shape:
        out = np.broadcast_to(out, x.shape)
    return out


def _quantize(v: np.ndarray) -> bytes:
    """Round to 20 significant bits (~6 decimal digits) and serialise; |v| < 1e-10 counts as 0."""
    v = np.asarray(v, dtype=np.float64).ravel()
    fin = np.isfinite(v)
    if not fin.all():
        code = np.where(fin, 0, np.where(np.isnan(v), 3, np.where(v > 0, 1, 2))).astype(np.int64)
        v = np.where(fin, v, 0.0)
    else:
        code = None
    v = np.where(np.abs(v) < 1e-10, 0.0, v)
    mant, ex = np.frexp(v)
    m = np.rint(mant * 1048576.0)
    over = np.abs(m) == 1048576.0
    if over.any():
        m = np.where(over, m * 0.5, m)
        ex = np.where(over, ex + 1, ex)
    out = m.astype(np.int64).tobytes() + ex.astype(np.int64).tobytes()
    return out if code is None else out + code.tobytes()


GAIN_MODES = ("fair", "raw")


def fingerprint(graph: Graph, gain: str = "fair") -> str:
    """Functional fingerprint (hex): hash of rounded outputs on fixed probe inputs.

    Fast (NumPy on 64 points / a 4x8x4x4 tensor); equal for graphs that compute the same
    function (to ~6 significant digits) with the same parameters.

    ``gain="fair"`` (the default, as campaigns evaluate): an activation is identified with
    what gain-fair evaluation trains, ``f / gamma_f`` (see :mod:`grammar.gain`), so ``a * f``
    and ``f`` share a fingerprint for any ``a > 0``; and since a network with symmetric
    init and zero bias cannot tell ``f(x)``, ``-f(x)``, ``f(-x)`` and ``-f(-x)`` apart, the
    smallest hash of the four is taken (``relu``, ``x + |x|`` and ``x - |x|`` are one
    function). Input scale stays: ``x * sigmoid(1.5 * x)`` differs from ``x * sigmoid(x)``.
    ``gain="raw"`` hashes the function as it is (for campaigns that train it raw).
    Normact layers are hashed as they are in both modes.
    """
    if gain not in GAIN_MODES:
        raise ValueError(f"gain must be one of {', '.join(GAIN_MODES)}, got {gain!r}")
    with np.errstate(all="ignore"):
        if graph.space == ACTIVATION and gain == "fair":
            fair = _gain_fair_fingerprint(graph)
            if fair is not None:
                return fair
        h = hashlib.blake2b(digest_size=16)
        h.update(graph.space.encode())
        if graph.space == ACTIVATION:
            h.update(_quantize(evaluate_numpy(graph, ACT_PROBE)))
            if graph.params:
                h.update(
                    _quantize(
                        evaluate_numpy(graph, ACT_PROBE, {k: _ACT_PERTURB[k] for k in graph.params})
                    )
                )
        else:
            h.update(f"|eps={graph.eps!r}|groups={graph.groups}".encode())
            h.update(_quantize(evaluate_numpy(graph, NORM_PROBE, _NORM_INIT, PROBE_GROUPS)))
            if graph.params:
                h.update(_quantize(evaluate_numpy(graph, NORM_PROBE, _NORM_PERTURB, PROBE_GROUPS)))
    return h.hexdigest()


def _gain_fair_fingerprint(graph: Graph) -> str | None:
    """The canonical hash of the four sign variants of ``f / gamma_f``; None when the gain
    is unusable (such a function is rejected before training; it keeps its raw hash)."""
    from .gain import GainError, activation_gain

    try:
        gamma = activation_gain(graph)
    except GainError:
        return None
    param_sets: list[dict[str, float] | None] = [None]
    if graph.params:
        param_sets.append({k: _ACT_PERTURB[k] for k in graph.params})
    on_probe = [
        np.broadcast_to(evaluate_numpy(graph, ACT_PROBE, p), ACT_PROBE.shape) / gamma
        for p in param_sets
    ]
    on_mirror = [
        np.broadcast_to(evaluate_numpy(graph, -ACT_PROBE, p), ACT_PROBE.shape) / gamma
        for p in param_sets
    ]
    digests = []
    for values in (on_probe, [-v for v in on_probe], on_mirror, [-v for v in on_mirror]):
        h = hashlib.blake2b(digest_size=16)
        h.update(b"activation|gain=fair")
        for v in values:
            h.update(_quantize(v))
        digests.append(h.hexdigest())
    return min(digests)


# ---------------------------------------------------------------------- canonical key
def to_sympy(graph: Graph):
    """SymPy expression of an activation graph (GrammarError for normact or ops without one)."""
    import sympy

    from .errors import GrammarError

    if graph.space != ACTIVATION:
        raise GrammarError(
            "SymPy forms exist only for activation graphs; normact statistics have none"
        )
    vals: list = [None] * len(graph.nodes)
    x = sympy.Symbol("x", real=True)
    for i, n in enumerate(graph.nodes):
        if not graph.live[i]:
            continue
        if n.op == "x":
            vals[i] = x
        elif n.op == "const":
            v = float(n.value)  # type: ignore[arg-type]  # a const node always has a value (validated)
            vals[i] = sympy.Integer(int(v)) if v.is_integer() and abs(v) < 1e15 else sympy.Float(v)
        elif n.op == "param":
            vals[i] = sympy.Symbol(str(n.name), real=True)
        else:
            spec = OPS[n.op]
            if spec.sympy is None:
                raise GrammarError(f"op {n.op!r} has no SymPy form")
            vals[i] = spec.sympy(*(vals[j] for j in n.inputs))
    return vals[-1]


_WARM: list[bool] = []


def _warm_up() -> None:
    """First simplify pays SymPy's lazy imports; do it once outside the time budget."""
    if not _WARM:
        import sympy

        x = sympy.Symbol("x", real=True)
        sympy.simplify(
            x / (1 + sympy.exp(-x)) + sympy.Max(x, 0) + sympy.sin(x) ** 2 + sympy.cos(x) ** 2
        )
        _WARM.append(True)


class _Timeout(BaseException):
    """The simplify budget ran out. A BaseException: SymPy catches ``Exception`` in places
    (its caches, its assumption system), and a budget it swallows would let simplify run on
    and return a partly simplified form."""


def _can_use_alarm() -> bool:
    """SIGALRM is usable only on the main thread and when nobody else (e.g. pytest-timeout)
    already owns it: we never cancel or replace someone else's timer."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        return False
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return False
    return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)


def _simplify_with_budget(expr, timeout_s: float):
    """``sympy.simplify(expr)`` interrupted after ``timeout_s``; None on timeout or failure."""
    import sympy

    fired: list[bool] = []

    def _raise(signum, frame):
        # The exception can land in code that swallows it (a gc callback reports it as
        # "unraisable" and goes on), so the timer is re-armed until it reaches us.
        fired.append(True)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _raise)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            result = sympy.simplify(expr)
            signal.setitimer(signal.ITIMER_REAL, 0)
            return None if fired else result
        except _Timeout:
            return None
        except Exception:  # noqa: BLE001 - a SymPy failure only means "no canonical form"
            return None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)


def canonical_key(graph: Graph, timeout_s: float = 0.2) -> str:
    """Canonical key (hex). Activation: hash of the SymPy form simplified within ``timeout_s``
    (SIGALRM budget; off the main thread, or when SIGALRM is already in use, SymPy's automatic
    canonical form is hashed without simplify); on timeout or an op without a SymPy form it
    falls back to :attr:`Graph.key`.  Normact: :attr:`Graph.key`.
    """
    import sympy

    from .errors import GrammarError

    if graph.space != ACTIVATION:
        return graph.key
    _warm_up()
    start = time.monotonic()
    try:
        expr = to_sympy(graph)
    except (GrammarError, RecursionError):
        return graph.key
    left = timeout_s - (time.monotonic() - start)
    if left <= 0:
        return graph.key
    if _can_use_alarm():
        simp = _simplify_with_budget(expr, left)
        if simp is None:
            return graph.key
    else:
        simp = expr  # cannot bound simplify here: use SymPy's automatic canonical form
    return hashlib.blake2b(("sympy|" + sympy.srepr(simp)).encode(), digest_size=16).hexdigest()
