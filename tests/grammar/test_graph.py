"""Graph: immutability, JSON round-trip, stable key, validation errors, from_dict fuzz."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerforge.grammar import BUILTINS, GrammarError, Graph, Node, parse, to_text


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_json_round_trip(name):
    g = BUILTINS[name]
    d = json.loads(json.dumps(g.to_dict()))
    g2 = Graph.from_dict(d)
    assert g2 == g and g2.key == g.key


def test_graph_is_immutable_and_hashable():
    g = parse("x * sigmoid(x)", "activation")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.space = "normact"  # type: ignore[misc] - assigning a frozen field on purpose
    assert isinstance(g.nodes, tuple)
    assert {g: 1}[parse("x * sigmoid(x)", "activation")] == 1


def test_key_ignores_dead_nodes_order_and_duplicates():
    live = Graph("activation", (Node("x"), Node("sigmoid", (0,)), Node("mul", (0, 1))))
    dead = Graph(
        "activation", (Node("x"), Node("tanh", (0,)), Node("sigmoid", (0,)), Node("mul", (2, 0)))
    )
    dup = Graph("activation", (Node("x"), Node("x"), Node("sigmoid", (1,)), Node("mul", (0, 2))))
    assert live.key == dead.key == dup.key
    assert dead.num_nodes == 2 and len(dead.pruned().nodes) == 3 and dead.pruned().key == live.key
    assert live.key != parse("x * tanh(x)", "activation").key
    # stable across processes: a fixed value
    assert live.key == parse("x * sigmoid(x)", "activation").key
    assert len(live.key) == 32 and int(live.key, 16) >= 0


def test_properties():
    g = BUILTINS["evonorm_b0"]
    assert g.space == "normact" and g.uses_x and g.num_nodes == 8 and g.depth == 6
    assert g.params == ("bias", "v1", "weight") and g.num_params == 3 and g.eps == 1e-3
    assert g.text == to_text(g) and "eps=0.001" in g.text
    c = Graph("activation", (Node("x"), Node("const", value=2.0), Node("sin", (1,))))
    assert not c.uses_x


@pytest.mark.parametrize(
    "d,fragment",
    [
        ([], "must be a JSON object"),
        ({"space": "conv", "nodes": [{"op": "x"}]}, "field 'space'"),
        ({"space": "activation"}, "field 'nodes'"),
        ({"space": "activation", "nodes": []}, "field 'nodes'"),
        (
            {"space": "activation", "nodes": [{"op": "x"}], "extra": 1},
            "unknown graph field(s): extra",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}, {"op": "frob", "inputs": [0]}]},
            "node 1: unknown op 'frob'",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}, {"op": "sigmoid", "inputs": [0, 0]}]},
            "node 1: op 'sigmoid' takes 1 input(s), got 2",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}, {"op": "sigmoid", "inputs": [1]}]},
            "node 1: input 1 must be the index of an earlier node",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}, {"op": "sigmoid", "inputs": [True]}]},
            "node 1: input True",
        ),
        (
            {"space": "activation", "nodes": [{"op": "const", "value": "1"}]},
            "node 0: field 'value' must be a number",
        ),
        (
            {"space": "activation", "nodes": [{"op": "const"}]},
            "node 0: const needs a finite numeric 'value'",
        ),
        (
            {"space": "activation", "nodes": [{"op": "param", "name": "v1"}]},
            "node 0: unknown parameter 'v1'",
        ),
        (
            {
                "space": "activation",
                "nodes": [{"op": "x"}, {"op": "std", "inputs": [0], "axis": "batch"}],
            },
            "node 1: op 'std' is not available in the activation space",
        ),
        (
            {"space": "normact", "nodes": [{"op": "x"}, {"op": "std", "inputs": [0]}]},
            "needs an axis",
        ),
        (
            {
                "space": "normact",
                "nodes": [{"op": "x"}, {"op": "std", "inputs": [0], "axis": "time"}],
            },
            "needs an axis",
        ),
        ({"space": "normact", "nodes": [{"op": "x"}], "options": {"eps": -1}}, "eps must be"),
        (
            {"space": "normact", "nodes": [{"op": "x"}], "options": {"groups": 2.5}},
            "groups must be",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}], "options": {"eps": 0.1}},
            "activation graphs take none",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x", "bogus": 1}]},
            "node 0: unknown field(s) bogus",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}], "format": "v0"},
            "unsupported graph format",
        ),
        (
            {"space": "activation", "nodes": [{"op": "const", "value": 10**400}]},
            "node 0: field 'value' is out of range",
        ),
        (
            {"space": "normact", "nodes": [{"op": "x"}], "options": {"eps": 10**400}},
            "option 'eps' is out of range",
        ),
        (
            {"space": "activation", "nodes": [{"op": "x"}, {"op": "sin", "inputs": [10**400]}]},
            "node 1: input",
        ),
        ({"space": "activation", "nodes": [{"op": 3}]}, "node 0: field 'op' must be a string"),
        ({"space": "activation", "nodes": ["x"]}, "node 0: must be an object"),
        (
            {"space": "activation", "nodes": [{"op": "x", "inputs": "0"}]},
            "field 'inputs' must be a list",
        ),
    ],
)
def test_malformed_json_names_the_problem(d, fragment):
    with pytest.raises(GrammarError) as info:
        Graph.from_dict(d)
    assert fragment in str(info.value), str(info.value)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(
        ["x", "const", "param", "add", "std", "batch", "v1", "beta", "activation", "normact"]
    ),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["op", "inputs", "value", "name", "axis", "space", "nodes", "options", "eps", "zz"]
            ),
            kids,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json)
def test_fuzz_from_dict_random_json(d):
    try:
        g = Graph.from_dict(d)
    except GrammarError:
        return
    assert Graph.from_dict(g.to_dict()) == g


_node = st.fixed_dictionaries(
    {"op": st.sampled_from(["x", "const", "param", "add", "sigmoid", "std", "mul", "lerp", "?"])},
    optional={
        "inputs": st.lists(st.integers(-2, 6), max_size=3),
        "value": st.floats(allow_nan=True, allow_infinity=True),
        "name": st.sampled_from(["beta", "v0", "v1", "weight", "zz"]),
        "axis": st.sampled_from(["batch", "group", "time"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["activation", "normact"]), st.lists(_node, min_size=1, max_size=6))
def test_fuzz_from_dict_plausible_nodes(space, nodes):
    try:
        g = Graph.from_dict({"space": space, "nodes": nodes})
    except GrammarError:
        return
    # anything accepted prints and parses back to the same key
    assert parse(to_text(g), space).key == g.key


@pytest.mark.parametrize("kind,ops", [("activation", "swish"), ("normact", "evonorm")])
def test_facts_carried_by_mutation_and_pruning_equal_fresh_ones(kind, ops):
    """mutate() and pruned() reuse cached per-node facts (hashes, depths, x-dependence) and
    the key; each must equal what a freshly built graph of the same nodes computes."""
    import random

    from layerforge.grammar import make_space, mutate, random_graph

    space = make_space(kind, ops=ops)
    rng = random.Random(5)
    graph = random_graph(space, rng)
    for _ in range(300):
        graph = mutate(graph, space, rng)
        fresh = Graph._trusted(graph.space, graph.nodes, graph.eps, graph.momentum, graph.groups)
        for name in ("node_hashes", "_depths", "_xdep", "key"):
            assert getattr(graph, name) == getattr(fresh, name), name
        assert graph.depth == fresh.depth and graph.uses_x == fresh.uses_x
