"""The init-time Fisher features: finite, deterministic, and they tell functions apart."""

from __future__ import annotations

import numpy as np
import torch

from layerforge.grammar import parse
from layerforge.search.strategies.surrogate_fisher import TOP_EIGENVALUES, fisher_features

PROXY = {"arch": "mlp", "dataset": "digits", "seed": 0}


def test_fisher_features_are_finite_deterministic_and_differ_between_functions():
    torch.set_num_threads(1)
    relu = fisher_features(parse("max(x, 0)", "activation"), PROXY)
    again = fisher_features(parse("max(x, 0)", "activation"), PROXY)
    tanh = fisher_features(parse("tanh(x)", "activation"), PROXY)
    assert relu.shape == (TOP_EIGENVALUES + 2,)
    assert np.isfinite(relu).all() and np.array_equal(relu, again)
    # eigenvalues largest first, the top one's share of the trace in (0, 1]
    assert (np.diff(relu[:TOP_EIGENVALUES]) <= 0).all() and 0 < relu[-1] <= 1
    assert not np.allclose(relu, tanh)
