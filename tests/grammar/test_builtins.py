"""The built-in library."""

from __future__ import annotations

import pytest

from layerforge.grammar import (
    BUILTINS,
    GrammarError,
    Graph,
    baseline,
    check_static,
    get_builtin,
    list_builtins,
    make_space,
)
from layerforge.grammar.builtins import ACTIVATION_TEXT, NORMACT_TEXT, builtin_text

EXPECTED_ACT = {
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "softplus",
    "tanh",
    "sigmoid",
    "hardswish",
}
EXPECTED_NORM = {
    "bn_relu",
    "gn_relu",
    "ln_relu",
    "in_relu",
    "evonorm_b0",
    "evonorm_s0",
    "evonorm_s1",
    "evonorm_b1",
}


def test_names_and_kinds():
    assert set(list_builtins("activation")) == EXPECTED_ACT
    assert set(list_builtins("normact")) == EXPECTED_NORM
    assert list_builtins() == sorted(EXPECTED_ACT | EXPECTED_NORM) == sorted(BUILTINS)
    for name in list_builtins():
        g = get_builtin(name)
        assert isinstance(g, Graph) and g.uses_x
        assert g.space == ("activation" if name in EXPECTED_ACT else "normact")
        assert builtin_text(name) in (ACTIVATION_TEXT.get(name), NORMACT_TEXT.get(name))
    assert get_builtin("swish").key == get_builtin("silu").key


def test_baseline():
    assert baseline("activation") == "relu" and baseline("normact") == "bn_relu"
    with pytest.raises(GrammarError):
        baseline("conv")


def test_unknown_builtin_lists_names():
    with pytest.raises(GrammarError) as info:
        get_builtin("evonorm_x9")
    assert "evonorm_b0" in str(info.value) and "relu" in str(info.value)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtins_fit_the_full_space(name):
    g = BUILTINS[name]
    check_static(g, make_space(g.space, "full"))


def test_evonorm_facts():
    assert get_builtin("evonorm_b0").eps == 1e-3 and get_builtin("evonorm_b0").momentum == 0.1
    assert get_builtin("evonorm_s0").eps == 1e-5 and get_builtin("evonorm_s0").groups == 32
    assert "v1" in get_builtin("evonorm_s0").params and "v1" not in get_builtin("evonorm_s1").params
