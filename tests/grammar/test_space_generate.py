"""Spaces, the static check, random_graph and mutate."""

from __future__ import annotations

import random

import pytest

from layerforge.grammar import (
    BUILTINS,
    GrammarError,
    Graph,
    Node,
    check_static,
    make_space,
    mutate,
    parse,
    random_graph,
    uses_statistic,
)
from layerforge.grammar.ops import EVONORM_OPS, SWISH_OPS


def test_presets():
    s = make_space("activation", "swish")
    assert s.kind == "activation" and s.ops == SWISH_OPS
    e = make_space("normact", "evonorm", max_nodes=10, max_depth=7)
    assert (
        e.ops == EVONORM_OPS and e.max_nodes == 10 and set(e.axes) == {"batch", "instance", "group"}
    )
    f = make_space("normact", "full")
    assert "std" in f.ops and "layer" in f.axes
    assert "std" not in make_space("activation", "full").ops
    assert make_space("activation", ["add", "sigmoid"]).ops == ("add", "sigmoid")


@pytest.mark.parametrize(
    "args,kw,fragment",
    [
        (("activation", "nope"), {}, "unknown op preset 'nope'"),
        (("activation", ["sigmoid", "frob"]), {}, "unknown op 'frob'"),
        (("activation", ["std"]), {}, "op 'std' is not valid in the activation space"),
        (("activation", "evonorm"), {}, "normact preset"),
        (("normact", "swish"), {}, "activation preset"),
        (("conv", "full"), {}, "unknown space kind"),
        (("activation", "full"), {"max_nodes": 0}, "max_nodes"),
        (("normact", "full"), {"axes": ["time"]}, "unknown axis"),
        (("activation", []), {}, "must not be empty"),
        (("activation", "swish"), {"require_statistic": True}, "only to the normact space"),
        (("normact", ["add", "mul", "max"]), {"require_statistic": True}, "needs a statistic op"),
    ],
)
def test_make_space_errors(args, kw, fragment):
    with pytest.raises(GrammarError) as info:
        make_space(*args, **kw)
    assert fragment in str(info.value)


def test_check_static_rejections():
    act = make_space("activation", "swish", max_nodes=3, max_depth=3)
    check_static(parse("x * sigmoid(beta * x)", "activation"), act)
    with pytest.raises(GrammarError, match="does not depend on x"):
        check_static(
            Graph("activation", (Node("x"), Node("const", value=1.0), Node("sin", (1,)))), act
        )
    with pytest.raises(GrammarError, match="5 op nodes, over the limit of 3"):
        check_static(parse("sin(x) + cos(x) * tanh(x)", "activation"), act)
    with pytest.raises(GrammarError, match="depth 4, over the limit of 3"):
        check_static(
            parse("sin(sin(sin(sin(x))))", "activation"),
            make_space("activation", "swish", max_depth=3),
        )
    with pytest.raises(GrammarError, match="op 'gelu' is not allowed"):
        check_static(parse("gelu(x)", "activation"), act)
    with pytest.raises(GrammarError, match="normact graph but the space is activation"):
        check_static(BUILTINS["evonorm_b0"], act)
    evo = make_space("normact", "evonorm")
    check_static(BUILTINS["evonorm_b0"], evo)
    check_static(BUILTINS["evonorm_s0"], evo)
    with pytest.raises(GrammarError, match="axis 'layer' is not allowed"):
        check_static(parse("x / std(x, layer) * weight + bias", "normact"), evo)


def test_a_space_that_requires_a_statistic_rejects_activations_with_an_affine():
    space = make_space("normact", "full", require_statistic=True)
    for name in ("bn_relu", "evonorm_b0", "evonorm_s0"):
        check_static(BUILTINS[name], space)
        assert uses_statistic(BUILTINS[name])
    rectifier = parse("max(x, 0) * weight + bias", "normact")
    assert not uses_statistic(rectifier)
    check_static(rectifier, make_space("normact", "full"))  # allowed where not required
    with pytest.raises(GrammarError, match="uses no statistic .* requires"):
        check_static(rectifier, space)
    # only live nodes count: a statistic pruned away from the output is not used
    dead = Graph(
        "normact",
        (
            Node("x"),
            Node("std", (0,), axis="group"),
            Node("const", value=0.0),
            Node("max", (0, 2)),
            Node("param", name="weight"),
            Node("param", name="bias"),
            Node("mul", (3, 4)),
            Node("add", (6, 5)),
        ),
    )
    assert not uses_statistic(dead)


def test_random_and_mutate_in_a_statistic_space_always_use_one():
    space = make_space("normact", "evonorm", require_statistic=True)
    rng = random.Random(3)
    g = random_graph(space, rng)
    for _ in range(300):
        assert uses_statistic(g), g.to_text()
        m = mutate(g, space, rng)
        assert uses_statistic(m), m.to_text()
        g = m if rng.random() < 0.7 else random_graph(space, rng)


SPACES = [
    make_space("activation", "swish"),
    make_space("activation", "full", max_nodes=4, max_depth=3),
    make_space("normact", "evonorm"),
    make_space("normact", "full", max_nodes=6, max_depth=5),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.kind}-{len(s.ops)}-{s.max_nodes}")
def test_random_and_mutate_valid_within_limits_and_cover_ops(space):
    rng = random.Random(7)
    seen_random, seen_mut, axes = set(), set(), set()
    for _ in range(1500):
        g = random_graph(space, rng)
        check_static(g, space)
        assert g.uses_x and g.num_nodes <= space.max_nodes and g.depth <= space.max_depth
        m = mutate(g, space, rng)
        check_static(m, space)
        assert m.key != g.key
        seen_random.update(g.ops_used)
        seen_mut.update(m.ops_used)
        axes.update(n.axis for n in m.nodes if n.axis)
        if space.kind == "normact":
            # EvoNorm: the graph ends with the per-channel affine
            assert m.nodes[-1].op == "add" and "weight" in m.params and "bias" in m.params
    assert set(space.ops) <= seen_random
    assert set(space.ops) <= seen_mut
    if space.kind == "normact":
        assert axes == set(space.axes)


@pytest.mark.parametrize("space", SPACES[::2], ids=lambda s: s.kind)
def test_deterministic_from_seed(space):
    def run(seed):
        rng = random.Random(seed)
        out = []
        g = random_graph(space, rng)
        for _ in range(50):
            g = mutate(g, space, rng)
            out.append(g.key)
            out.append(random_graph(space, rng).key)
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_mutate_seed_outside_space_still_valid():
    space = make_space("activation", ["sin", "add"], max_nodes=3, max_depth=3)
    rng = random.Random(0)
    for name in ["gelu", "selu", "mish"]:
        m = mutate(BUILTINS[name], space, rng)
        check_static(m, space)
    with pytest.raises(GrammarError, match="cannot mutate a normact graph"):
        mutate(BUILTINS["bn_relu"], space, rng)


def test_mutate_changes_one_node_evonorm_style():
    space = make_space("normact", "evonorm")
    rng = random.Random(1)
    g = BUILTINS["evonorm_s0"]
    changed = 0
    for _ in range(30):
        m = mutate(g, space, rng)
        check_static(m, space)
        changed += m.key != g.key
        # the affine is kept
        assert m.nodes[-1].op == "add"
    assert changed == 30


@pytest.mark.parametrize("kind", ["activation", "normact"])
def test_random_graphs_round_trip_text_and_json(kind):
    from layerforge.grammar import fingerprint, to_text

    space = make_space(kind, "full")
    rng = random.Random(21)
    for _ in range(300):
        g = mutate(random_graph(space, rng), space, rng)
        back = parse(to_text(g), kind)
        assert back.key == g.key
        assert fingerprint(back) == fingerprint(g)
        assert Graph.from_dict(g.to_dict()).key == g.key


@pytest.mark.parametrize("kind,ops", [("activation", "swish"), ("normact", "evonorm")])
def test_mutate_with_a_validity_memo_gives_the_same_graphs(kind, ops):
    """The ``valid_keys`` memo only skips re-checking structures known to be valid."""
    space = make_space(kind, ops=ops)
    memo: set[str] = set()
    runs = []
    for valid_keys in (None, memo, memo):  # no memo, an empty memo, then a warm one
        rng = random.Random(11)
        graph, keys = random_graph(space, rng), []
        for _ in range(200):
            graph = mutate(graph, space, rng, valid_keys=valid_keys)
            keys.append(graph.key)
        runs.append(keys)
    assert runs[0] == runs[1] == runs[2]
    assert set(runs[0]) <= memo and len(memo) >= len(set(runs[0]))


def test_passes_static_memoizes_only_valid_structures():
    from layerforge.grammar import passes_static

    space = make_space("activation", "swish", max_nodes=2)
    memo: set[str] = set()
    good, ignores_x, too_big = (
        parse(t, "activation") for t in ("x * sigmoid(x)", "sigmoid(1.0)", "tanh(sin(cos(x)))")
    )
    assert passes_static(good, space, memo) and memo == {good.key}
    assert not passes_static(ignores_x, space, memo) and not passes_static(too_big, space, memo)
    assert memo == {good.key}
    assert passes_static(good, space) and not passes_static(too_big, space)
