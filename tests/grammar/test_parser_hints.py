"""The parser's errors for unknown names say what was probably meant (issue 17)."""

from __future__ import annotations

import pytest

from layerforge.grammar import ParseError, parse
from layerforge.grammar.parser import did_you_mean


@pytest.mark.parametrize(
    "text,space,message",
    [
        (
            "sigmod(x)",
            "activation",
            "unknown function 'sigmod' at position 0 (did you mean 'sigmoid', 'sigmoid_mul' "
            "or 'hard_sigmoid'?)",
        ),
        ("x * bta", "activation", "unknown name 'bta' at position 4 (did you mean 'beta'?)"),
        (
            "x / std(x, batch) * wieght",
            "normact",
            "unknown name 'wieght' at position 20 (did you mean 'weight'?)",
        ),
        (
            "v0 * x",
            "activation",
            "unknown name 'v0' at position 0 ('v0' is a parameter of the normact space)",
        ),
        (
            "beta * x",
            "normact",
            "unknown name 'beta' at position 0 ('beta' is a parameter of the activation space)",
        ),
        ("x + foo", "activation", "unknown name 'foo' at position 4"),
    ],
)
def test_unknown_names_get_a_hint(text, space, message):
    with pytest.raises(ParseError) as info:
        parse(text, space)
    assert str(info.value) == message
    assert info.value.token in text and info.value.token in message


def test_did_you_mean():
    assert did_you_mean("budjet", ["budget", "name"]) == " (did you mean 'budget'?)"
    assert did_you_mean("qqq", ["budget", "name"]) == ""
    assert did_you_mean("tanhh", ["tanh", "atan"]) == " (did you mean 'tanh' or 'atan'?)"
