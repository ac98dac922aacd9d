"""Parser: round-trips, precise errors, injection attempts, limits, hypothesis fuzz."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerforge.grammar import BUILTINS, GrammarError, ParseError, parse, to_text
from layerforge.grammar.parser import MAX_NESTING, MAX_TEXT

SWISH_FOUND = [
    "x * sigmoid(beta * x)",
    "max(x, sigmoid(x))",
    "cos(x) - x",
    "min(x, sin(x))",
    "atan(x)^2 - x",
    "max(x, tanh(x))",
]
ISSUE_EXAMPLES = [
    ("x * sigmoid(1.0 * x)", "activation"),
    ("max(x, tanh(x))", "activation"),
    ("x / max(std(x, batch), v1 * x + std(x, instance))", "normact"),
]


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_round_trip(name):
    g = BUILTINS[name]
    text = to_text(g)
    g2 = parse(text, g.space)
    assert g2.key == g.key
    assert to_text(g2) == text


@pytest.mark.parametrize("text", SWISH_FOUND)
def test_swish_found_functions_round_trip(text):
    g = parse(text, "activation")
    assert g.uses_x
    assert parse(to_text(g), "activation").key == g.key


@pytest.mark.parametrize("text,space", ISSUE_EXAMPLES)
def test_issue_examples_parse(text, space):
    g = parse(text, space)
    assert parse(to_text(g), space).key == g.key


def test_structure_and_precedence():
    g = parse("x * sigmoid(beta * x)", "activation")
    assert g.params == ("beta",) and g.num_nodes == 3 and g.depth == 3
    # literal is a constant, not a parameter
    assert parse("1.0 * x", "activation").params == ()
    # precedence: a - b - c is (a - b) - c, different from a - (b - c)
    assert (
        parse("x - sin(x) - cos(x)", "activation").key
        != parse("x - (sin(x) - cos(x))", "activation").key
    )
    assert parse("-x^2", "activation").key == parse("-(x^2)", "activation").key
    assert parse("-x^2", "activation").key != parse("(-x)^2", "activation").key
    assert parse("x**2", "activation").key == parse("square(x)", "activation").key
    # commutative ops share a key, non-commutative do not
    assert parse("x * sin(x)", "activation").key == parse("sin(x) * x", "activation").key
    assert parse("x - sin(x)", "activation").key != parse("sin(x) - x", "activation").key
    # negative literals and negation round-trip to the same key
    for t in ["x * -1.5", "x - -2", "-(1.0) * x", "--x", "(-2)^2 * x", "-2^2 * x", "x + 1e-05"]:
        g = parse(t, "activation")
        assert parse(to_text(g), "activation").key == g.key, t


def test_options_round_trip():
    g = parse("x / std(x, group) ; eps=1e-3, groups=8, momentum=0.2", "normact")
    assert (g.eps, g.groups, g.momentum) == (1e-3, 8, 0.2)
    assert parse(to_text(g), "normact").key == g.key
    assert g.key != parse("x / std(x, group)", "normact").key


@pytest.mark.parametrize(
    "text,space,pos,token,fragment",
    [
        ("x + foo", "activation", 4, "foo", "unknown name 'foo' at position 4"),
        ("foo(x)", "activation", 0, "foo", "unknown function 'foo'"),
        ("sigmoid(x, x)", "activation", 0, "sigmoid", "sigmoid takes 1 argument(s), got 2"),
        ("max(x)", "activation", 0, "max", "takes 2 argument(s), got 1"),
        ("x +", "activation", 3, "", "end of input"),
        ("x $ 2", "activation", 2, "$", "unexpected character '$' at position 2"),
        ("std(x, batch)", "activation", 0, "std", "not available in the activation space"),
        ("std(x, bogus)", "normact", 7, "bogus", "needs an axis"),
        ("x ^ 4", "activation", 4, "4", "only the exponents 2 and 3"),
        ("v0 * x", "activation", 0, "v0", "unknown name 'v0'"),
        ("beta * x", "normact", 0, "beta", "unknown name 'beta'"),
        ("(x", "activation", 2, "", "expected ')'"),
        ("x)", "activation", 1, ")", "unexpected token ')'"),
        ("", "activation", 0, "", "empty expression"),
        ("sigmoid", "activation", 0, "sigmoid", "is a function"),
        ("x ; eps=0.1", "activation", 2, ";", "only valid in the normact space"),
        ("x ; eps=2", "normact", 8, "2", "eps must be in (0, 1)"),
        ("x * 1e999", "activation", 4, "1e999", "not finite"),
    ],
)
def test_errors_name_position_and_token(text, space, pos, token, fragment):
    with pytest.raises(ParseError) as info:
        parse(text, space)
    err = info.value
    assert isinstance(err, GrammarError) and isinstance(err, ValueError)
    assert fragment in str(err), str(err)
    assert err.position == pos, str(err)
    assert err.token == token, str(err)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "x.__class__",
        "eval('1')",
        "exec('import os')",
        "[x for x in ()]",
        "lambda: 0",
        "x if x else x",
        "open('/etc/passwd')",
        "getattr(x, 'y')",
        "x; import os",
        "sigmoid(x) # comment",
        "'x'",
    ],
)
def test_code_injection_is_a_parse_error(text):
    with pytest.raises(ParseError):
        parse(text, "activation")


def test_injection_error_names_the_token():
    with pytest.raises(ParseError) as info:
        parse("__import__('os').system('id')", "activation")
    assert info.value.token == "__import__" and info.value.position == 0


def test_length_and_nesting_limits():
    with pytest.raises(ParseError, match="too long"):
        parse("x" + " + x" * MAX_TEXT, "activation")
    deep = "sin(" * (MAX_NESTING + 5) + "x" + ")" * (MAX_NESTING + 5)
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(deep, "activation")
    deep_parens = "(" * 500 + "x" + ")" * 500
    with pytest.raises(ParseError, match="nested too deeply"):
        parse(deep_parens, "activation")
    with pytest.raises(ParseError, match="nested too deeply"):
        parse("-" * 500 + "x", "activation")
    ok = "sin(" * 20 + "x" + ")" * 20
    assert parse(ok, "activation").depth == 20


def test_unknown_space():
    with pytest.raises(GrammarError, match="unknown space"):
        parse("x", "conv")


_ALPHABET = string.ascii_letters[:12] + string.digits + " +-*/^(),;=.e_" + "xvbtsig"
_TOKENS = [
    "x",
    "beta",
    "v0",
    "v1",
    "weight",
    "bias",
    "sigmoid",
    "max",
    "min",
    "std",
    "mean",
    "batch",
    "group",
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "^",
    "**",
    "2",
    "3",
    "1.5",
    "0",
    ";",
    "eps",
    "=",
    "1e-3",
    "lerp",
    "tanh",
    "__import__",
    "'",
    ".",
    "os",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_fuzz_random_text_only_raises_parse_errors(text):
    for space in ("activation", "normact"):
        try:
            g = parse(text, space)
        except ParseError as exc:
            assert isinstance(exc.position, int) and 0 <= exc.position <= len(text)
            continue
        assert parse(to_text(g), space).key == g.key


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_TOKENS), max_size=25), st.sampled_from(["activation", "normact"]))
def test_fuzz_token_soup_only_raises_parse_errors(tokens, space):
    text = " ".join(tokens)
    try:
        g = parse(text, space)
    except ParseError as exc:
        assert str(exc.position) in str(exc)
        return
    assert parse(to_text(g), space).key == g.key
