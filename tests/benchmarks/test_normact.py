"""The norm-act benchmarks' own pieces (B10a, B10): the preset they measure is the one
campaigns use, and the structural distance to EvoNorm on exact answers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of the repo, not installed


def test_the_preset_campaigns_use_is_a_setting_b10a_measures():
    from benchmarks import normact_fidelity, normact_rediscovery

    assert list(normact_fidelity.preset_setting()) in normact_fidelity.CONFIG["settings"]
    assert normact_rediscovery.CONFIG["proxies"] == [{"preset": normact_fidelity.CONFIG["preset"]}]


def test_batch_free_built_ins_are_those_without_a_batch_statistic():
    from benchmarks.normact_fidelity import batch_free

    assert not batch_free("bn_relu") and not batch_free("evonorm_b0")
    assert all(batch_free(n) for n in ("gn_relu", "ln_relu", "in_relu", "evonorm_s0"))


def test_structural_similarity_is_one_for_the_same_expression_and_less_otherwise():
    from benchmarks.normact_rediscovery import op_similarity, structural_similarity
    from layerforge.grammar import get_builtin, parse

    b0, s0 = get_builtin("evonorm_b0"), get_builtin("evonorm_s0")
    assert structural_similarity(b0, b0) == 1.0
    # commutative inputs written the other way round are the same expression
    swapped = parse(
        "bias + weight * (x / max(std(x, instance) + x * v1, std(x, batch))) ; eps=0.001",
        "normact",
    )
    assert structural_similarity(swapped, b0) == 1.0
    assert 0 < structural_similarity(b0, s0) < 1
    assert structural_similarity(b0, s0) == structural_similarity(s0, b0)
    # the same ingredients (div, mul, add, std over batch and instance, max) wired differently
    rewired = parse("max(x / std(x, batch), std(x, instance)) * weight + bias", "normact")
    assert op_similarity(rewired, b0) == 1.0
    assert structural_similarity(rewired, b0) < 1


def _setting(linear_mean: float, s0_mean: float) -> dict:
    """One B10a setting's figures as run() builds them, from made-up accuracies."""
    from benchmarks.normact_fidelity import _beats, _stats, batch_free
    from layerforge.search.fidelity import PANELS, discrimination

    table = {n: [0.60, 0.62, 0.64] for n in PANELS["normact"]}
    table["in_relu"] = [0.12, 0.13, 0.125]
    table["evonorm_s0"] = [s0_mean - 0.01, s0_mean, s0_mean + 0.01]
    per = {n: _stats(v) for n, v in table.items()}
    linear = _stats([linear_mean - 0.005, linear_mean, linear_mean + 0.005])
    vs_bn = {n: _beats(per[n], per["bn_relu"]) for n in per if n != "bn_relu"}
    over = _beats(per["bn_relu"], linear)
    return {
        "dataset": "gratings",
        "batch": 2,
        "lr": 0.01,
        "steps": 1200,
        "preset": True,
        "per_function": per,
        **discrimination(table),
        "bn_relu_rank": 2,
        "ranking": sorted(per, key=lambda n: -per[n]["mean"]),
        "vs_bn_relu": vs_bn,
        "batch_free_beating_bn_relu": [n for n, c in vs_bn.items() if c["beats"] and batch_free(n)],
        "chance": 0.125,
        "linear_network": {
            **linear,
            "above_chance": linear["mean"] - 0.125,
            "bn_relu_over_it": over,
            "no_credit": linear["mean"] - 0.125 <= 0.05 and over["beats"],
        },
        "scale_controls": {},
    }


def test_b10a_goal_needs_the_linear_network_near_chance_and_a_batch_free_winner():
    from benchmarks.normact_fidelity import summarize
    from layerforge.search.fidelity import PANELS

    panel = list(PANELS["normact"])
    good = summarize([_setting(0.13, 0.85)], panel, [0, 1, 2], False, 1.0)
    assert good["met"] is True
    assert good["figures"]["headline"]["(b) the linear network gets no credit"] is True
    # a task a linear network solves (the synthetic preset before) fails (b), whatever else holds
    linear_wins = summarize([_setting(0.72, 0.85)], panel, [0, 1, 2], False, 1.0)
    assert linear_wins["met"] is False
    assert linear_wins["figures"]["headline"]["(b) the linear network gets no credit"] is False
    # no batch-free layer beating BN-ReLU fails (c)
    assert summarize([_setting(0.13, 0.62)], panel, [0, 1, 2], False, 1.0)["met"] is False


def test_a_b10_winner_counts_only_with_a_statistic_and_above_the_linear_network():
    from benchmarks.normact_rediscovery import real_winner

    row = {
        "origin": "search",
        "beats BN-ReLU": True,
        "normalizes (uses a statistic)": True,
        "score vs linear network (x * weight + bias) (points, SDs)": {"pooled_sds": 9.0},
    }
    assert real_winner(row)
    assert not real_winner({**row, "normalizes (uses a statistic)": False})  # tanh(x) * w + b
    assert not real_winner({**row, "beats BN-ReLU": None})
    assert not real_winner({**row, "origin": "baseline"})
    weak = {"pooled_sds": 1.0}
    assert not real_winner(
        {**row, "score vs linear network (x * weight + bias) (points, SDs)": weak}
    )
