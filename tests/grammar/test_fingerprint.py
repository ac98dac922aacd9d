"""Functional fingerprint and canonical key."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from layerforge.grammar import (
    BUILTINS,
    canonical_key,
    fingerprint,
    make_space,
    mutate,
    parse,
    random_graph,
)

A, N = "activation", "normact"


@pytest.mark.parametrize(
    "group,space",
    [
        (
            [
                "x * sigmoid(x)",
                "sigmoid(x) * x",
                "x / (1 + exp(-x))",
                "sigmoid_mul(x, x)",
                "x * sigmoid(1.0 * x)",
            ],
            A,
        ),
        (["max(x, 0)", "relu(x)", "max(0, x)", "(x + abs(x)) / 2"], A),
        (["tanh(x)", "2 * sigmoid(2 * x) - 1"], A),
        (["sin(x)^2 + cos(x)^2", "1 + 0 * x"], A),
        (["x * sigmoid(beta * x)", "sigmoid(x * beta) * x"], A),
        (["x / std(x, batch) * weight + bias", "bias + weight * x / std(x, batch)"], N),
        (["x * sigmoid(v1 * x) / std(x, group)", "sigmoid(x * v1) * x / std(x, group)"], N),
        (
            [
                "(x - mean(x, instance)) / sqrt(var(x, instance) + 0.00001)",
                "(x - mean(x, instance)) / std(x, instance)",
            ],
            N,
        ),
    ],
)
def test_equivalent_expressions_share_a_fingerprint(group, space):
    fps = {fingerprint(parse(t, space)) for t in group}
    assert len(fps) == 1, group


def test_builtins_are_told_apart():
    by_fp = {}
    for name, g in BUILTINS.items():
        by_fp.setdefault(fingerprint(g), []).append(name)
    merged = [names for names in by_fp.values() if len(names) > 1]
    assert merged == [["silu", "swish"]]  # swish is an alias of silu


@pytest.mark.parametrize(
    "a,b,space",
    [
        ("x * sigmoid(x)", "x * sigmoid(beta * x)", A),  # trainable beta is a different function
        ("x * sigmoid(x)", "x * sigmoid(x) + 0.001", A),
        ("x / std(x, instance)", "x / std(x, group)", N),
        ("x / std(x, batch)", "x / std(x, layer)", N),
        ("x / std(x, group)", "x / std(x, group) ; eps=0.001", N),
        ("x * v1", "x", N),
    ],
)
def test_different_functions_differ(a, b, space):
    assert fingerprint(parse(a, space)) != fingerprint(parse(b, space))


def test_fingerprint_is_deterministic_and_hex():
    g = BUILTINS["evonorm_b0"]
    assert fingerprint(g) == fingerprint(g)
    assert len(fingerprint(g)) == 32 and int(fingerprint(g), 16) >= 0


def test_fingerprint_handles_non_finite_outputs():
    fp = fingerprint(
        parse(
            "exp(x)^3 * exp(x)^3 * exp(x)^3 * exp(x)^3 - exp(x)^3 * exp(x)^3 * exp(x)^3 * exp(x)^3",
            A,
        )
    )
    assert isinstance(fp, str)


def test_generate_mutate_fingerprint_dedupe_finds_many_distinct_functions():
    # throughput is measured in benchmarks/ (proposal_throughput), never asserted here
    for kind, preset in [("activation", "swish"), ("normact", "evonorm")]:
        space = make_space(kind, preset)
        rng = random.Random(0)
        seen = {fingerprint(mutate(random_graph(space, rng), space, rng)) for _ in range(300)}
        assert len(seen) > 30


def test_canonical_key():
    keys = {
        canonical_key(parse(t, A), timeout_s=2.0)
        for t in ["x * sigmoid(x)", "sigmoid(x) * x", "x / (1 + exp(-x))"]
    }
    assert len(keys) == 1
    assert canonical_key(parse("x * tanh(x)", A), timeout_s=2.0) not in keys
    # normact: the structural key
    g = BUILTINS["evonorm_s0"]
    assert canonical_key(g) == g.key


def test_canonical_key_falls_back_to_key_on_timeout():
    import signal

    big = parse(" + ".join(f"sin({i} * x)^3 * cosh(x + {i})" for i in range(1, 12)), A)
    # the budget is a SIGALRM timer, used only while nobody else holds SIGALRM: an earlier
    # test's timer library (pytest-timeout, Ray) may have left its handler installed
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        assert canonical_key(big, timeout_s=0.05) == big.key
    finally:
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_canonical_key_times_out_when_the_first_alarm_lands_in_a_gc_callback():
    """CI once saw the budget's exception raised inside a gc callback (hypothesis installs
    one), where Python reports it as unraisable and goes on: simplify then ran to the end and
    returned a simplified key. The budget must still hold."""
    import gc
    import signal

    big = parse(" + ".join(f"sin({i} * x)^3 * cosh(x + {i})" for i in range(1, 12)), A)
    canonical_key(parse("x", A))  # SymPy's warm-up outside the measured call
    start = time.monotonic()
    stalled: list[bool] = []

    def slow_gc_callback(phase, info):
        # once, 20 ms into the call: stall 100 ms inside the collector, over the 50 ms budget
        if not stalled and time.monotonic() - start > 0.02:
            stalled.append(True)
            until = time.monotonic() + 0.1
            while time.monotonic() < until:
                pass

    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    gc.callbacks.append(slow_gc_callback)
    try:
        start = time.monotonic()
        assert canonical_key(big, timeout_s=0.05) == big.key
    finally:
        gc.callbacks.remove(slow_gc_callback)
        gc.set_threshold(*threshold)
        signal.signal(signal.SIGALRM, previous)
    assert stalled, "the collector never ran during simplify: the test did not test anything"


def _normalized(graph, xs):
    import numpy as np

    from layerforge.grammar import evaluate_numpy
    from layerforge.grammar.gain import activation_gain

    with np.errstate(all="ignore"):
        return np.broadcast_to(evaluate_numpy(graph, xs), xs.shape) / activation_gain(graph)


def test_pairwise_distinct_random_functions_mostly_distinct():
    import numpy as np

    from layerforge.grammar import evaluate_numpy
    from layerforge.grammar.gain import GainError

    space = make_space("activation", "swish")
    rng = random.Random(5)
    graphs = [random_graph(space, rng) for _ in range(200)]
    xs = np.linspace(-3.3, 3.1, 41)
    for a, b in itertools.islice(itertools.combinations(graphs, 2), 2000):
        if fingerprint(a, "raw") == fingerprint(b, "raw"):
            # same raw fingerprint must mean same outputs on fresh points too
            with np.errstate(all="ignore"):
                np.testing.assert_allclose(
                    evaluate_numpy(a, xs), evaluate_numpy(b, xs), rtol=1e-4, atol=1e-6
                )
        if fingerprint(a) == fingerprint(b):
            # same gain-fair fingerprint: f_a / gamma_a is one of the four sign variants of
            # f_b / gamma_b on fresh points
            try:
                na = _normalized(a, xs)
                variants = [_normalized(b, xs), _normalized(b, -xs)]
            except GainError:
                continue
            variants += [-v for v in variants]
            assert any(np.allclose(na, v, rtol=1e-4, atol=1e-6) for v in variants), (a, b)


def test_gain_fair_fingerprint_merges_rescalings_and_sign_variants_only():
    same = ["max(x, 0)", "2 * max(x, 0)", "x + abs(x)", "x - abs(x)", "3 * max(-x, 0)"]
    assert len({fingerprint(parse(t, A)) for t in same}) == 1
    # raw, only the two spellings of 2 * relu coincide
    assert len({fingerprint(parse(t, A), "raw") for t in same}) == len(same) - 1
    swish = {fingerprint(parse(t, A)) for t in ["x * sigmoid(x)", "2 * x * sigmoid(x)"]}
    assert len(swish) == 1
    # input scale is not merged: the Swish beta family stays distinct
    assert fingerprint(parse("x * sigmoid(1.5 * x)", A)) not in swish
    assert fingerprint(parse("x * tanh(x)", A)) not in swish
    with pytest.raises(ValueError, match="gain must be one of"):
        fingerprint(parse("x", A), "loud")


def test_canonical_key_off_main_thread_and_with_foreign_alarm():
    import signal
    import threading

    g = parse("sigmoid(x) * x", A)
    out = []
    texts = ["sigmoid(x) * x", "x * sigmoid(x)", "x / (1 + exp(-x))", "x * tanh(x)"]
    t = threading.Thread(target=lambda: out.extend(canonical_key(parse(s, A)) for s in texts))
    t.start()
    t.join(30)
    # off the main thread: SymPy's automatic canonical form, still merging these three
    assert len(out) == 4 and out[0] == out[1] == out[2] != out[3]
    # someone else's SIGALRM timer (e.g. pytest-timeout) is left alone
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        canonical_key(g, timeout_s=1.0)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 20.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not fired
