"""Op registry: every primitive the two search spaces are built from.

Each :class:`Op` declares its name, arity, the spaces it may appear in, a torch callable and a
NumPy callable (the reference semantics, used by the fingerprint), a SymPy form (activation
ops; ``None`` where there is none), a LaTeX template and source templates used by the code
generators (``torch``, ``numpy``, ``jax``).  Templates use ``{0}``, ``{1}``... for the
argument expressions; aggregations use ``{axis}`` / ``{kind}`` too.

Protected semantics (so that no op produces NaN from finite input, by construction):

* ``div(a, b)``: ``a / b`` with ``|b|`` clamped to at least 1e-6 (sign kept, 0 counts as +);
  exact whenever ``|b| >= 1e-6``.
* ``sqrt(a)``: sign-preserving ``sign(a) * sqrt(|a|)``.
* ``log(a)``: ``log(|a| + 1e-6)``.
* ``exp``, ``sinh``, ``cosh``: argument clamped to at most 30 in magnitude.
* statistics: ``std = sqrt(var + eps)``, ``rms = sqrt(mean(a^2) + eps)``, computed in at
  least float32.

Aggregations (normact only) take an axis: ``batch`` (N,H,W; running statistics in eval mode),
``instance`` (H,W), ``group`` (C/g,H,W) and ``layer`` (C,H,W).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from . import _rt_numpy as rn
from . import _rt_torch as rt
from .errors import GrammarError

ACTIVATION = "activation"
NORMACT = "normact"
KINDS = (ACTIVATION, NORMACT)
BOTH = frozenset(KINDS)
NORM_ONLY = frozenset((NORMACT,))
AXES = ("batch", "instance", "group", "layer")
STAT_KINDS = ("mean", "sqmean", "var", "std", "rms")


@dataclass(frozen=True)
class Op:
    """One primitive: semantics in every target plus metadata for search and printing."""

    name: str
    arity: int
    kinds: frozenset
    torch: Callable
    numpy: Callable
    sympy: Callable | None
    latex: str
    torch_src: str
    numpy_src: str
    jax_src: str | None
    description: str = ""
    commutative: bool = False
    aggregate: bool = False
    infix: str | None = None  # '+', '-', '*', '/' for printing

    def supports(self, target: str) -> bool:
        """Whether this op can be translated to ``target`` (torch, numpy, jax, sympy, latex)."""
        if target == "sympy":
            return self.sympy is not None
        if target == "jax":
            return self.jax_src is not None
        return True


def _sym():
    import sympy

    return sympy


def _sy_sigmoid(a):
    s = _sym()
    return 1 / (1 + s.exp(-a))


def _sy_softplus(a):
    s = _sym()
    return s.log(1 + s.exp(a))


_SY: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "max": lambda a, b: _sym().Max(a, b),
    "min": lambda a, b: _sym().Min(a, b),
    "neg": lambda a: -a,
    "abs": lambda a: _sym().Abs(a),
    "square": lambda a: a**2,
    "cube": lambda a: a**3,
    "sqrt": lambda a: _sym().sign(a) * _sym().sqrt(_sym().Abs(a)),
    "log": lambda a: _sym().log(_sym().Abs(a) + _sym().Float(1e-6)),
    "exp": lambda a: _sym().exp(a),
    "sin": lambda a: _sym().sin(a),
    "cos": lambda a: _sym().cos(a),
    "sinh": lambda a: _sym().sinh(a),
    "cosh": lambda a: _sym().cosh(a),
    "tanh": lambda a: _sym().tanh(a),
    "asinh": lambda a: _sym().asinh(a),
    "atan": lambda a: _sym().atan(a),
    "sinc": lambda a: _sym().sinc(a),
    "relu": lambda a: _sym().Max(a, 0),
    "minzero": lambda a: _sym().Min(a, 0),
    "sigmoid": _sy_sigmoid,
    "softplus": _sy_softplus,
    "gauss": lambda a: _sym().exp(-(a**2)),
    "erf": lambda a: _sym().erf(a),
    "gelu": lambda a: a * (1 + _sym().erf(a / _sym().sqrt(2))) / 2,
    "elu": lambda a: _sym().Piecewise((a, a > 0), (_sym().exp(a) - 1, True)),
    "softsign": lambda a: a / (1 + _sym().Abs(a)),
    "hard_sigmoid": lambda a: _sym().Min(_sym().Max(a + 3, 0), 6) / 6,
    "sigmoid_mul": lambda a, b: _sy_sigmoid(a) * b,
    "gauss_diff": lambda a, b: _sym().exp(-((a - b) ** 2)),
    "laplace_diff": lambda a, b: _sym().exp(-_sym().Abs(a - b)),
    "lerp": lambda a, b, t: t * a + (1 - t) * b,
}

# name, arity, kinds, torch callable, numpy callable, latex, torch_src, numpy_src, jax_src, description
#: (name, arity, torch fn, numpy fn, latex, torch source, numpy source, jax source, description)
_ELEMENTWISE: list[tuple[str, int, Callable, Callable, str, str, str, str | None, str]] = [
    (
        "add",
        2,
        torch.add,
        np.add,
        "{0} + {1}",
        "({0} + {1})",
        "({0} + {1})",
        "({0} + {1})",
        "a + b",
    ),
    (
        "sub",
        2,
        torch.sub,
        np.subtract,
        "{0} - {1}",
        "({0} - {1})",
        "({0} - {1})",
        "({0} - {1})",
        "a - b",
    ),
    (
        "mul",
        2,
        torch.mul,
        np.multiply,
        "{0} \\cdot {1}",
        "({0} * {1})",
        "({0} * {1})",
        "({0} * {1})",
        "a * b",
    ),
    (
        "div",
        2,
        rt._pdiv,
        rn._pdiv,
        "\\frac{{{0}}}{{{1}}}",
        "_pdiv({0}, {1})",
        "_pdiv({0}, {1})",
        "({0} / jnp.where({1} < 0, -jnp.maximum(jnp.abs({1}), 1e-6), jnp.maximum(jnp.abs({1}), 1e-6)))",
        "a / b, |b| clamped to >= 1e-6",
    ),
    (
        "max",
        2,
        torch.maximum,
        np.maximum,
        "\\max\\left({0}, {1}\\right)",
        "torch.maximum({0}, {1})",
        "np.maximum({0}, {1})",
        "jnp.maximum({0}, {1})",
        "elementwise maximum",
    ),
    (
        "min",
        2,
        torch.minimum,
        np.minimum,
        "\\min\\left({0}, {1}\\right)",
        "torch.minimum({0}, {1})",
        "np.minimum({0}, {1})",
        "jnp.minimum({0}, {1})",
        "elementwise minimum",
    ),
    ("neg", 1, torch.neg, np.negative, "-{0}", "(-{0})", "(-{0})", "(-{0})", "-a"),
    (
        "abs",
        1,
        torch.abs,
        np.abs,
        "\\left|{0}\\right|",
        "torch.abs({0})",
        "np.abs({0})",
        "jnp.abs({0})",
        "|a|",
    ),
    (
        "square",
        1,
        torch.square,
        np.square,
        "\\left({0}\\right)^{{2}}",
        "({0} * {0})",
        "({0} * {0})",
        "({0} * {0})",
        "a^2",
    ),
    (
        "cube",
        1,
        lambda a: a * a * a,
        lambda a: a * a * a,
        "\\left({0}\\right)^{{3}}",
        "({0} * {0} * {0})",
        "({0} * {0} * {0})",
        "({0} * {0} * {0})",
        "a^3",
    ),
    (
        "sqrt",
        1,
        rt._psqrt,
        rn._psqrt,
        "\\operatorname{{sign}}\\left({0}\\right)\\sqrt{{\\left|{0}\\right|}}",
        "_psqrt({0})",
        "_psqrt({0})",
        "(jnp.sign({0}) * jnp.sqrt(jnp.maximum(jnp.abs({0}), 1e-12)))",
        "sign-preserving sqrt: sign(a) * sqrt(|a|)",
    ),
    (
        "log",
        1,
        rt._plog,
        rn._plog,
        "\\log\\left(\\left|{0}\\right| + \\epsilon\\right)",
        "_plog({0})",
        "_plog({0})",
        "jnp.log(jnp.abs({0}) + 1e-6)",
        "log(|a| + 1e-6)",
    ),
    (
        "exp",
        1,
        rt._pexp,
        rn._pexp,
        "e^{{{0}}}",
        "_pexp({0})",
        "_pexp({0})",
        "jnp.exp(jnp.minimum({0}, 30.0))",
        "exp(min(a, 30))",
    ),
    (
        "sin",
        1,
        torch.sin,
        np.sin,
        "\\sin\\left({0}\\right)",
        "torch.sin({0})",
        "np.sin({0})",
        "jnp.sin({0})",
        "sin",
    ),
    (
        "cos",
        1,
        torch.cos,
        np.cos,
        "\\cos\\left({0}\\right)",
        "torch.cos({0})",
        "np.cos({0})",
        "jnp.cos({0})",
        "cos",
    ),
    (
        "sinh",
        1,
        rt._psinh,
        rn._psinh,
        "\\sinh\\left({0}\\right)",
        "_psinh({0})",
        "_psinh({0})",
        "jnp.sinh(jnp.clip({0}, -30.0, 30.0))",
        "sinh (argument clamped to +-30)",
    ),
    (
        "cosh",
        1,
        rt._pcosh,
        rn._pcosh,
        "\\cosh\\left({0}\\right)",
        "_pcosh({0})",
        "_pcosh({0})",
        "jnp.cosh(jnp.clip({0}, -30.0, 30.0))",
        "cosh (argument clamped to +-30)",
    ),
    (
        "tanh",
        1,
        torch.tanh,
        np.tanh,
        "\\tanh\\left({0}\\right)",
        "torch.tanh({0})",
        "np.tanh({0})",
        "jnp.tanh({0})",
        "tanh",
    ),
    (
        "asinh",
        1,
        torch.asinh,
        np.arcsinh,
        "\\operatorname{{asinh}}\\left({0}\\right)",
        "torch.asinh({0})",
        "np.arcsinh({0})",
        "jnp.arcsinh({0})",
        "inverse sinh",
    ),
    (
        "atan",
        1,
        torch.atan,
        np.arctan,
        "\\operatorname{{atan}}\\left({0}\\right)",
        "torch.atan({0})",
        "np.arctan({0})",
        "jnp.arctan({0})",
        "arctangent",
    ),
    (
        "sinc",
        1,
        rt._sinc,
        rn._sinc,
        "\\operatorname{{sinc}}\\left({0}\\right)",
        "_sinc({0})",
        "_sinc({0})",
        "jnp.sinc({0} / jnp.pi)",
        "sin(a)/a (1 at 0)",
    ),
    (
        "relu",
        1,
        torch.relu,
        lambda a: np.maximum(a, 0.0),
        "\\max\\left({0}, 0\\right)",
        "torch.relu({0})",
        "np.maximum({0}, 0.0)",
        "jnp.maximum({0}, 0.0)",
        "max(a, 0)",
    ),
    (
        "minzero",
        1,
        lambda a: torch.clamp_max(a, 0.0),
        lambda a: np.minimum(a, 0.0),
        "\\min\\left({0}, 0\\right)",
        "torch.clamp_max({0}, 0.0)",
        "np.minimum({0}, 0.0)",
        "jnp.minimum({0}, 0.0)",
        "min(a, 0)",
    ),
    (
        "sigmoid",
        1,
        torch.sigmoid,
        rn._sigmoid,
        "\\sigma\\left({0}\\right)",
        "torch.sigmoid({0})",
        "_sigmoid({0})",
        "jax.nn.sigmoid({0})",
        "logistic sigmoid",
    ),
    (
        "softplus",
        1,
        F.softplus,
        rn._softplus,
        "\\operatorname{{softplus}}\\left({0}\\right)",
        "F.softplus({0})",
        "_softplus({0})",
        "jax.nn.softplus({0})",
        "log(1 + exp(a))",
    ),
    (
        "gauss",
        1,
        lambda a: torch.exp(-(a * a)),
        lambda a: np.exp(-(a * a)),
        "e^{{-\\left({0}\\right)^{{2}}}}",
        "torch.exp(-({0} * {0}))",
        "np.exp(-({0} * {0}))",
        "jnp.exp(-({0} * {0}))",
        "exp(-a^2)",
    ),
    (
        "erf",
        1,
        torch.erf,
        rn._erf,
        "\\operatorname{{erf}}\\left({0}\\right)",
        "torch.erf({0})",
        "_erf({0})",
        "jax.scipy.special.erf({0})",
        "error function",
    ),
    (
        "gelu",
        1,
        F.gelu,
        rn._gelu,
        "\\operatorname{{GELU}}\\left({0}\\right)",
        "F.gelu({0})",
        "_gelu({0})",
        "jax.nn.gelu({0}, approximate=False)",
        "exact GELU",
    ),
    (
        "elu",
        1,
        F.elu,
        rn._elu,
        "\\operatorname{{ELU}}\\left({0}\\right)",
        "F.elu({0})",
        "_elu({0})",
        "jax.nn.elu({0})",
        "ELU (alpha 1)",
    ),
    (
        "softsign",
        1,
        F.softsign,
        lambda a: a / (1.0 + np.abs(a)),
        "\\frac{{{0}}}{{1 + \\left|{0}\\right|}}",
        "F.softsign({0})",
        "({0} / (1.0 + np.abs({0})))",
        "({0} / (1.0 + jnp.abs({0})))",
        "a / (1 + |a|)",
    ),
    (
        "hard_sigmoid",
        1,
        F.hardsigmoid,
        lambda a: np.clip(a + 3.0, 0.0, 6.0) / 6.0,
        "\\operatorname{{hardsigmoid}}\\left({0}\\right)",
        "F.hardsigmoid({0})",
        "(np.clip({0} + 3.0, 0.0, 6.0) / 6.0)",
        "(jnp.clip({0} + 3.0, 0.0, 6.0) / 6.0)",
        "relu6(a + 3) / 6",
    ),
    (
        "sigmoid_mul",
        2,
        lambda a, b: torch.sigmoid(a) * b,
        lambda a, b: rn._sigmoid(a) * b,
        "\\sigma\\left({0}\\right) \\cdot {1}",
        "(torch.sigmoid({0}) * {1})",
        "(_sigmoid({0}) * {1})",
        "(jax.nn.sigmoid({0}) * {1})",
        "sigmoid(a) * b",
    ),
    (
        "gauss_diff",
        2,
        lambda a, b: torch.exp(-(a - b) * (a - b)),
        lambda a, b: np.exp(-(a - b) * (a - b)),
        "e^{{-\\left({0} - {1}\\right)^{{2}}}}",
        "torch.exp(-({0} - {1}) * ({0} - {1}))",
        "np.exp(-({0} - {1}) * ({0} - {1}))",
        "jnp.exp(-({0} - {1}) * ({0} - {1}))",
        "exp(-(a - b)^2)",
    ),
    (
        "laplace_diff",
        2,
        lambda a, b: torch.exp(-(a - b).abs()),
        lambda a, b: np.exp(-np.abs(a - b)),
        "e^{{-\\left|{0} - {1}\\right|}}",
        "torch.exp(-torch.abs({0} - {1}))",
        "np.exp(-np.abs({0} - {1}))",
        "jnp.exp(-jnp.abs({0} - {1}))",
        "exp(-|a - b|)",
    ),
    (
        "lerp",
        3,
        lambda a, b, t: t * a + (1 - t) * b,
        lambda a, b, t: t * a + (1 - t) * b,
        "{2} \\cdot {0} + \\left(1 - {2}\\right) \\cdot {1}",
        "({2} * {0} + (1.0 - {2}) * {1})",
        "({2} * {0} + (1.0 - {2}) * {1})",
        "({2} * {0} + (1.0 - {2}) * {1})",
        "t * a + (1 - t) * b",
    ),
]

_COMMUTATIVE = {"add", "mul", "max", "min"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_STAT_LATEX = {
    "mean": "\\mu_{{{axis}}}\\left({0}\\right)",
    "sqmean": "\\mu_{{{axis}}}\\left(\\left({0}\\right)^{{2}}\\right)",
    "var": "\\sigma^{{2}}_{{{axis}}}\\left({0}\\right)",
    "std": "\\sqrt{{\\sigma^{{2}}_{{{axis}}}\\left({0}\\right) + \\epsilon}}",
    "rms": "\\sqrt{{\\mu_{{{axis}}}\\left(\\left({0}\\right)^{{2}}\\right) + \\epsilon}}",
}
_STAT_DESC = {
    "mean": "mean over an axis",
    "sqmean": "second moment mean(a^2) over an axis",
    "var": "variance over an axis",
    "std": "sqrt(variance + eps) over an axis",
    "rms": "sqrt(mean(a^2) + eps) over an axis",
}


def _fast_numpy() -> dict[str, Callable]:
    """Faster NumPy callables for the fingerprint where SciPy is available (same values)."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return {}
    return {"erf": erf, "gelu": lambda a: 0.5 * a * (1.0 + erf(a * 0.7071067811865476))}


def _build() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    fast = _fast_numpy()
    for name, arity, tf, nf, latex, tsrc, nsrc, jsrc, desc in _ELEMENTWISE:
        ops[name] = Op(
            name=name,
            arity=arity,
            kinds=BOTH,
            torch=tf,
            numpy=fast.get(name, nf),
            sympy=_SY.get(name),
            latex=latex,
            torch_src=tsrc,
            numpy_src=nsrc,
            jax_src=jsrc,
            description=desc,
            commutative=name in _COMMUTATIVE,
            infix=_INFIX.get(name),
        )
    for kind in STAT_KINDS:
        ops[kind] = Op(
            name=kind,
            arity=1,
            kinds=NORM_ONLY,
            torch=partial(_torch_stat, kind=kind),
            numpy=partial(_numpy_stat, kind=kind),
            sympy=None,
            latex=_STAT_LATEX[kind],
            torch_src="",  # generated specially (batch axis keeps running statistics)
            numpy_src="",
            jax_src="",
            description=_STAT_DESC[kind],
            aggregate=True,
        )
    return ops


def _torch_stat(a, axis="instance", groups=1, eps=1e-5, *, kind):
    """Train-mode statistic without running buffers (used by per-op tests)."""
    return rt._stat(a, kind, axis, groups, eps)


def _numpy_stat(a, axis="instance", groups=1, eps=1e-5, running=None, *, kind):
    """Reference statistic in NumPy (train mode unless ``running`` is given for batch)."""
    return rn._stat(a, kind, axis, groups, eps, running)


OPS: dict[str, Op] = _build()

#: Ops the Swish paper searched over (unary and binary lists; beta*x and x+beta are mul/add
#: with the trainable scalar ``beta``; beta*x1+(1-beta)*x2 is ``lerp``).
SWISH_OPS = (
    "neg",
    "abs",
    "square",
    "cube",
    "sqrt",
    "log",
    "exp",
    "sin",
    "cos",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "atan",
    "sinc",
    "relu",
    "minzero",
    "sigmoid",
    "softplus",
    "gauss",
    "erf",
    "add",
    "mul",
    "sub",
    "div",
    "max",
    "min",
    "sigmoid_mul",
    "gauss_diff",
    "laplace_diff",
    "lerp",
)
#: EvoNorm's primitives (elementwise ops plus mean / second moment / std aggregations).
EVONORM_OPS = (
    "add",
    "mul",
    "div",
    "max",
    "neg",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "abs",
    "square",
    "sqrt",
    "mean",
    "sqmean",
    "std",
)


def get_op(name: str) -> Op:
    """Return the op called ``name``; GrammarError listing the known ops when there is none."""
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise GrammarError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def list_ops(kind: str | None = None) -> list[Op]:
    """All ops (sorted by name), or only those valid in space ``kind`` (activation|normact)."""
    if kind is not None and kind not in KINDS:
        raise GrammarError(f"unknown space kind {kind!r}; expected one of {', '.join(KINDS)}")
    return [op for _, op in sorted(OPS.items()) if kind is None or kind in op.kinds]
