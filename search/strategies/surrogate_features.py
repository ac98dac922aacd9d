"""Cheap, pre-training features of a candidate, for the ``surrogate`` strategy.

Activation: the function's outputs on the fingerprint's probe points (sorted), divided by its
gain gamma_f (:mod:`grammar.gain`) when the campaign trains gain-fair, so the features see
the function the proxies train. Normact: response statistics of the layer on the
fingerprint's probe batch (training mode) and on the same batch scaled by 10 (how the layer
reacts to scale). Both are NumPy reference evaluations: tens of microseconds per candidate,
so thousands can be screened per ask. Values are clipped to [-CLIP, CLIP] and non-finite
values mapped into that range, so a blown-up function is far from, not missing from, the
others.

A candidate whose gain is unusable (:class:`grammar.gain.GainError`) would be rejected by
every worker in a gain-fair campaign: :func:`candidate_features` returns None for it.
"""

from __future__ import annotations

import numpy as np

from layerforge.grammar import Graph, evaluate_numpy
from layerforge.grammar.fingerprint import ACT_PROBE, NORM_PROBE
from layerforge.grammar.gain import GainError, activation_gain
from layerforge.grammar.ops import ACTIVATION

CLIP = 20.0
_ACT_POINTS = np.sort(ACT_PROBE)
_NORM_QUANTILES = np.linspace(0.05, 0.95, 9)
_NORM_FLAT = NORM_PROBE.reshape(-1)


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` as float64 with NaN at 0 and infinities and outliers at +-CLIP."""
    with np.errstate(all="ignore"):
        v = np.asarray(values, dtype=np.float64)
        return np.clip(np.nan_to_num(v, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)


def activation_features(graph: Graph, gain: str = "fair") -> np.ndarray | None:
    """The (gain-normalized under ``gain="fair"``) outputs on the sorted probe points, or
    None when the gain is unusable (the workers would reject the candidate)."""
    with np.errstate(all="ignore"):
        outputs = np.broadcast_to(evaluate_numpy(graph, _ACT_POINTS.copy()), _ACT_POINTS.shape)
    if gain == "fair":
        try:
            outputs = outputs / activation_gain(graph)
        except GainError:
            return None
    return _finite(outputs)


def _response(graph: Graph, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The layer's output on the probe batch times ``scale``, flattened, with its input."""
    x = NORM_PROBE * scale
    with np.errstate(all="ignore"):
        out = np.broadcast_to(evaluate_numpy(graph, x), x.shape)
    return _finite(out.reshape(-1)), x.reshape(-1)


def normact_features(graph: Graph) -> np.ndarray:
    """Response statistics on the probe batch: output quantiles, mean, RMS, the fraction
    positive, per-channel spread, correlation with the input, and the log ratio of the
    output's RMS at input scale 10 to scale 1 (0 for a scale-invariant layer)."""
    rows = []
    rms = []
    for scale in (1.0, 10.0):
        out, x = _response(graph, scale)
        root = float(np.sqrt(np.mean(out * out)))
        rms.append(root)
        per_channel = out.reshape(NORM_PROBE.shape).std(axis=(0, 2, 3))
        with np.errstate(all="ignore"):
            corr = np.corrcoef(out, x)[0, 1] if out.std() > 1e-12 else 0.0
        rows.append(
            np.concatenate(
                [
                    np.quantile(out, _NORM_QUANTILES),
                    [out.mean(), root, float((out > 0).mean())],
                    [per_channel.mean(), per_channel.std()],
                    [0.0 if not np.isfinite(corr) else corr],
                ]
            )
        )
    ratio = np.log10((rms[1] + 1e-12) / (rms[0] + 1e-12))
    return _finite(np.concatenate([*rows, [ratio]]))


def candidate_features(graph: Graph, gain: str = "fair") -> np.ndarray | None:
    """The feature vector of ``graph`` for its space, or None when the candidate would be
    rejected before training (an activation with an unusable gain under gain-fair)."""
    if graph.space == ACTIVATION:
        return activation_features(graph, gain)
    return normact_features(graph)
