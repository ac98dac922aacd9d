"""Safe text form of graphs: a tokenizer, a recursive-descent parser and a printer.

Grammar (usual precedence; ``^`` / ``**`` bind tightest and take only the literal exponents
2 or 3)::

    text    := expr [';' option (',' option)*]          options: eps, momentum, groups (normact)
    expr    := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-' unary | power
    power   := atom [('^' | '**') NUMBER]
    atom    := NUMBER | NAME | NAME '(' args ')' | '(' expr ')'

Names come from a whitelist: ``x``; parameters (activation ``beta``, ``beta1``..``beta9``;
normact ``v0``, ``v1``, ``weight``, ``bias``); op names from :data:`grammar.ops.OPS` valid in
the space; axis names (``batch``, ``instance``, ``group``, ``layer``) as the second argument
of a statistic, e.g. ``std(x, batch)``.  Nothing is ever evaluated: the parser only builds
:class:`~grammar.graph.Node` tuples.  Identical sub-expressions become one node.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable

from .errors import GrammarError, ParseError
from .graph import (
    DEFAULT_EPS,
    DEFAULT_GROUPS,
    DEFAULT_MOMENTUM,
    MAX_GRAPH_NODES,
    Graph,
    Node,
    param_init,
)
from .ops import AXES, KINDS, NORMACT, OPS

MAX_TEXT = 16384
MAX_NESTING = 64

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|[-+*/^(),;=]))"
)
_POW = ("^", "**")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """Split ``text`` into (kind, text, position) tokens; ParseError on a stray character."""
    toks: list[tuple[str, str, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            j = pos
            while j < n and text[j].isspace():
                j += 1
            if j >= n:
                break
            toks.append(("bad", text[j], j))  # reported when the parser reaches it
            break
        kind = m.lastgroup
        if kind is None:  # only whitespace left
            break
        toks.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    toks.append(("end", "", n))
    return toks


class _Parser:
    def __init__(self, text: str, kind: str) -> None:
        self.text = text
        self.kind = kind
        self.toks = _tokenize(text)
        self.i = 0
        self.nodes: list[Node] = []
        self.index: dict[tuple, int] = {}
        self.nesting = 0

    # -------------------------------------------------------------- helpers
    def peek(self, k: int = 0) -> tuple[str, str, int]:
        t = self.toks[min(self.i + k, len(self.toks) - 1)]
        if t[0] == "bad":
            raise ParseError(f"unexpected character {t[1]!r} at position {t[2]}", t[2], t[1])
        return t

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(
        self, msg: str, tok: tuple[str, str, int] | None = None, hint: str = ""
    ) -> ParseError:
        tok = tok or self.peek()
        shown = repr(tok[1]) if tok[0] != "end" else "end of input"
        return ParseError(f"{msg} {shown} at position {tok[2]}{hint}", tok[2], tok[1])

    def unknown_name_hint(self, name: str) -> str:
        """What an unknown name may have meant: a close known name, or a parameter of the
        other space."""
        other = [k for k in KINDS if k != self.kind]
        for kind in other:
            try:
                param_init(kind, name)
            except GrammarError:
                continue
            return f" ({name!r} is a parameter of the {kind} space)"
        params = ["v0", "v1", "weight", "bias"] if self.kind == NORMACT else ["beta"]
        ops = [n for n, op in OPS.items() if self.kind in op.kinds]
        return did_you_mean(name, ["x", *params, *ops])

    def expect(self, text: str) -> tuple[str, str, int]:
        t = self.peek()
        if t[0] == "end" or t[1] != text:
            raise self.error(f"expected {text!r}, got")
        return self.next()

    def add(self, node: Node, tok: tuple[str, str, int]) -> int:
        k = (node.op, node.inputs, node.value, node.name, node.axis)
        got = self.index.get(k)
        if got is not None:
            return got
        if len(self.nodes) >= MAX_GRAPH_NODES:
            raise ParseError(
                f"expression too large (more than {MAX_GRAPH_NODES} nodes) at position {tok[2]}",
                tok[2],
                tok[1],
            )
        self.nodes.append(node)
        self.index[k] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            t = self.peek()
            raise ParseError(
                f"expression nested too deeply (limit {MAX_NESTING}) at position {t[2]}", t[2], t[1]
            )

    def const(self, value: float, tok: tuple[str, str, int]) -> int:
        if not math.isfinite(value):
            raise ParseError(
                f"number {tok[1]!r} at position {tok[2]} is not finite", tok[2], tok[1]
            )
        return self.add(Node("const", value=float(value) + 0.0), tok)

    # -------------------------------------------------------------- grammar
    def expr(self) -> int:
        self.enter()
        left = self.product()
        while self.peek()[0] == "op" and self.peek()[1] in "+-":
            t = self.next()
            right = self.product()
            left = self.add(Node("add" if t[1] == "+" else "sub", (left, right)), t)
        self.nesting -= 1
        return left

    def product(self) -> int:
        left = self.unary()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            t = self.next()
            right = self.unary()
            left = self.add(Node("mul" if t[1] == "*" else "div", (left, right)), t)
        return left

    def unary(self) -> int:
        t = self.peek()
        if t[0] == "op" and t[1] == "-":
            self.next()
            nxt, after = self.peek(), self.peek(1)
            if nxt[0] == "num" and not (after[0] == "op" and after[1] in _POW):
                self.next()
                return self.const(-float(nxt[1]), nxt)
            self.enter()
            inner = self.unary()
            self.nesting -= 1
            return self.add(Node("neg", (inner,)), t)
        return self.power()

    def power(self) -> int:
        base = self.atom()
        t = self.peek()
        if t[0] == "op" and t[1] in _POW:
            self.next()
            e = self.peek()
            if e[0] != "num":
                raise self.error("the exponent must be the number 2 or 3, got")
            self.next()
            if float(e[1]) == 2.0:
                return self.add(Node("square", (base,)), t)
            if float(e[1]) == 3.0:
                return self.add(Node("cube", (base,)), t)
            raise self.error("only the exponents 2 and 3 are supported, got", e)
        return base

    def atom(self) -> int:
        t = self.peek()
        if t[0] == "num":
            self.next()
            return self.const(float(t[1]), t)
        if t[0] == "op" and t[1] == "(":
            self.next()
            inner = self.expr()
            self.expect(")")
            return inner
        if t[0] == "name":
            self.next()
            name = t[1]
            if self.peek()[0] == "op" and self.peek()[1] == "(":
                return self.call(name, t)
            if name == "x":
                return self.add(Node("x"), t)
            if name in OPS:
                raise self.error(f"{name!r} is a function, call it as {name}(...):", t)
            if name in AXES:
                raise self.error("an axis may only be the second argument of a statistic, got", t)
            try:
                param_init(self.kind, name)
            except GrammarError:
                raise self.error("unknown name", t, self.unknown_name_hint(name)) from None
            return self.add(Node("param", name=name), t)
        raise self.error("unexpected token")

    def call(self, name: str, t: tuple[str, str, int]) -> int:
        op = OPS.get(name)
        if op is None:
            known = [n for n, o in OPS.items() if self.kind in o.kinds]
            raise self.error("unknown function", t, did_you_mean(name, known))
        if self.kind not in op.kinds:
            raise self.error(f"function not available in the {self.kind} space:", t)
        self.enter()
        self.expect("(")
        args: list[int] = []
        axis = None
        if op.aggregate:
            args.append(self.expr())
            self.expect(",")
            a = self.peek()
            if a[0] != "name" or a[1] not in AXES:
                raise self.error(
                    f"{name} needs an axis ({', '.join(AXES)}) as second argument, got"
                )
            self.next()
            axis = a[1]
        elif not (self.peek()[0] == "op" and self.peek()[1] == ")"):
            args.append(self.expr())
            while self.peek()[0] == "op" and self.peek()[1] == ",":
                self.next()
                args.append(self.expr())
        close = self.peek()
        if close[0] == "op" and close[1] == "," and op.aggregate:
            raise self.error(f"{name} takes 2 arguments (expression, axis), got extra", close)
        self.expect(")")
        if len(args) != op.arity:
            raise ParseError(
                f"{name} takes {op.arity} argument(s), got {len(args)}: {name!r} at position {t[2]}",
                t[2],
                t[1],
            )
        self.nesting -= 1
        return self.add(Node(name, tuple(args), axis=axis), t)

    def options(self) -> dict:
        opts: dict = {}
        if self.kind != NORMACT:
            raise self.error(
                "options (eps, momentum, groups) are only valid in the normact space:",
                self.toks[self.i - 1],
            )
        while True:
            k = self.peek()
            if k[0] != "name" or k[1] not in ("eps", "momentum", "groups"):
                raise self.error("expected an option (eps, momentum, groups), got")
            self.next()
            if k[1] in opts:
                raise self.error("repeated option", k)
            self.expect("=")
            v = self.peek()
            if v[0] != "num":
                raise self.error(f"option {k[1]} needs a number, got")
            self.next()
            val = float(v[1])
            if k[1] == "groups":
                if not val.is_integer() or not 1 <= val <= 4096:
                    raise self.error("groups must be an integer in [1, 4096], got", v)
                opts["groups"] = int(val)
            elif k[1] == "eps":
                if not 0 < val < 1:
                    raise self.error("eps must be in (0, 1), got", v)
                opts["eps"] = val
            else:
                if not 0 <= val <= 1:
                    raise self.error("momentum must be in [0, 1], got", v)
                opts["momentum"] = val
            if self.peek()[0] == "op" and self.peek()[1] == ",":
                self.next()
                continue
            return opts


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x' or 'y'?)"`` naming the options closest to ``word``, or ``""``
    (for error messages about unknown names, here and in the campaign spec)."""
    close = [repr(c) for c in difflib.get_close_matches(word, [str(o) for o in options], n=3)]
    if not close:
        return ""
    names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" (did you mean {names}?)"


def parse(text: str, space) -> Graph:
    """Parse ``text`` into a :class:`Graph` of ``space`` (a kind name or a Space).

    Never evaluates anything; raises :class:`ParseError` (with ``position`` and ``token``) on
    bad text, e.g. ``parse("foo(x)", "activation")`` -> ``unknown function 'foo' at position 0``.
    Op-set and size limits of a :class:`Space` are checked by
    :func:`grammar.space.check_static`, not here.
    """
    kind = getattr(space, "kind", space)
    if kind not in KINDS:
        raise GrammarError(f"unknown space {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__} at position 0", 0, "")
    if len(text) > MAX_TEXT:
        raise ParseError(
            f"expression too long ({len(text)} characters, limit {MAX_TEXT}) at position {MAX_TEXT}",
            MAX_TEXT,
            text[MAX_TEXT],
        )
    p = _Parser(text, kind)
    if p.peek()[0] == "end":
        raise ParseError("empty expression at position 0", 0, "")
    root = p.expr()
    opts: dict = {}
    t = p.peek()
    if t[0] == "op" and t[1] == ";":
        p.next()
        opts = p.options()
    if p.peek()[0] != "end":
        raise p.error("unexpected token")
    nodes = p.nodes[: root + 1]
    try:
        return Graph(kind, tuple(nodes), **opts).pruned()
    except GrammarError as exc:  # pragma: no cover - the parser builds valid nodes
        raise ParseError(f"{exc} at position 0", 0, "") from None


# ---------------------------------------------------------------------- printing
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "square": 4, "cube": 4}


def to_text(graph: Graph) -> str:
    """Print ``graph`` as text that :func:`parse` reads back to a graph with the same key.

    Minimal parentheses; normact options that differ from the defaults are appended after
    ``;`` (e.g. ``... ; eps=0.001``).
    """
    nodes = graph.nodes
    memo: dict[int, tuple[str, int]] = {}
    budget = [0]

    def fmt(i: int) -> tuple[str, int]:
        got = memo.get(i)
        if got is not None:
            return got
        n = nodes[i]
        if n.op == "x":
            r = ("x", 5)
        elif n.op == "param":
            r = (str(n.name), 5)
        elif n.op == "const":
            v = float(n.value) + 0.0  # type: ignore[arg-type]  # a const node always has a value (validated)
            r = (repr(v), 3 if v < 0 else 5)
        else:
            args = [fmt(j) for j in n.inputs]
            op = OPS[n.op]
            if op.infix:
                p = _PREC[n.op]
                (ls, lp), (rs, rp) = args
                ls = ls if lp >= p else f"({ls})"
                rs = rs if rp > p else f"({rs})"
                r = (f"{ls} {op.infix} {rs}", p)
            elif n.op == "neg":
                s, sp = args[0]
                child = nodes[n.inputs[0]]
                if sp < 3 or (child.op == "const" and float(child.value) >= 0):  # type: ignore[arg-type]  # a const node always has a value (validated)
                    s = f"({s})"
                r = (f"-{s}", 3)
            elif n.op in ("square", "cube"):
                s, sp = args[0]
                s = s if sp >= 5 else f"({s})"
                r = (f"{s}^{2 if n.op == 'square' else 3}", 4)
            elif op.aggregate:
                r = (f"{n.op}({args[0][0]}, {n.axis})", 5)
            else:
                r = (f"{n.op}({', '.join(a for a, _ in args)})", 5)
        budget[0] += len(r[0])
        if budget[0] > 50 * MAX_TEXT:
            raise GrammarError(
                "graph is too large to print as text (shared sub-expressions expand)"
            )
        memo[i] = r
        return r

    text = fmt(len(nodes) - 1)[0]
    if graph.space == NORMACT:
        opts = []
        if graph.eps != DEFAULT_EPS:
            opts.append(f"eps={graph.eps!r}")
        if graph.momentum != DEFAULT_MOMENTUM:
            opts.append(f"momentum={graph.momentum!r}")
        if graph.groups != DEFAULT_GROUPS:
            opts.append(f"groups={graph.groups}")
        if opts:
            text += " ; " + ", ".join(opts)
    if len(text) > MAX_TEXT:
        raise GrammarError(
            f"graph text is {len(text)} characters, over the parser's limit of {MAX_TEXT}"
        )
    return text
