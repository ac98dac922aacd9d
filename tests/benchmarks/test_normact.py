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
