"""An init-time signal for the ``surrogate`` strategy: the empirical Fisher's spectrum.

After AQuaSurF (Bingham & Miikkulainen, NeurIPS 2023): before any training, build the
network a proxy would train (its architecture, the gain-fair candidate, the workers' seeded
initialisation), take one probe batch of the proxy's dataset, and compute the per-sample
loss gradients G (B x P). The nonzero eigenvalues of the empirical Fisher G^T G / B are those
of the B x B Gram matrix G G^T / B, so the features are cheap: log10 of the top ``k``
eigenvalues, log10 of the trace, and the top eigenvalue's share of the trace.

Measured (2026-12-07, scratch study on the B6 proxy ``mlp 3x128 / mnist1d, 20k samples``,
probe batch of 32, random Swish-space functions (max 4 nodes) trained 300 steps, one seed,
on a machine loaded about 5x): 0.075 CPU-s per candidate against 0.48 s for that proxy's
training. Leave-one-out Spearman over the functions that completed (GP / k-NN ensemble, as
in the strategy): on 54 of them, probe features alone 0.67 / 0.52, with these appended
0.80 / 0.53; on 108, 0.81 / 0.66 and 0.81 / 0.67; on 160, 0.82 / 0.71 and 0.86 / 0.73
(these features alone: 0.81 / 0.78). benchmarks/search_efficiency.py's
``fisher_feature_study`` (another 160 random functions, 141 completed): 0.79 / 0.68 alone,
0.76 / 0.69 with them, 0.73 / 0.76 these alone; 0.074 CPU-s against 0.45 s of training.
At best a small, unsteady gain at campaign sizes (none in the last study), for hundreds
of times a probe feature's cost (too dear to screen hundreds of candidates per ask, and in
the controller it would cost 0.15 CPU-s per member on two proxies), so it is not wired into
the strategy. The intended use, if a larger study finds a gain, is a second
screening stage on the pool's short-list and on the members, cached by fingerprint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: eigenvalues kept (besides the trace and the top one's share)
TOP_EIGENVALUES = 5
#: samples of the probe batch (the Gram matrix is this size squared)
PROBE_SAMPLES = 32


def fisher_features(
    graph: Any, proxy: dict[str, Any], *, cache: Any = None, k: int = TOP_EIGENVALUES
) -> np.ndarray:
    """The empirical Fisher's spectrum at initialisation of ``proxy``'s network with the
    gain-fair activation ``graph``, on the first :data:`PROBE_SAMPLES` training samples of
    the proxy's dataset (seeded by ``proxy["seed"]``, default 0): ``k`` log10 eigenvalues
    (largest first), log10 of the trace, the top eigenvalue's share. Deterministic: one
    torch thread is the caller's choice, the seeds are fixed."""
    import torch
    from torch.nn import functional

    from layerforge.workers.architectures import build_model
    from layerforge.workers.candidates import resolve_candidate
    from layerforge.workers.datasets import load_dataset
    from layerforge.workers.gain import (
        GainNormalizedFactory,
        candidate_gain,
        scale_keeping_init,
    )

    seed = int(proxy.get("seed", 0))
    data = load_dataset(
        proxy["dataset"], "cpu", seed=seed, cache=cache, **(proxy.get("dataset_options") or {})
    )
    candidate = resolve_candidate(graph)
    factory = GainNormalizedFactory(candidate.factory, candidate_gain(candidate))
    torch.manual_seed(seed)
    model = build_model(
        proxy["arch"],
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        kind="activation",
        layer_factory=factory,
        scale=proxy.get("scale", "cpu"),
    )
    if proxy["arch"] == "mlp":
        scale_keeping_init(model)
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = data.train_x[:PROBE_SAMPLES], data.train_y[:PROBE_SAMPLES]
    rows = []
    for i in range(len(x)):
        loss = functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params)
                ]
            )
        )
    gram = torch.stack(rows).double()
    gram = torch.nan_to_num(gram, nan=0.0, posinf=1e6, neginf=-1e6)
    eig = torch.linalg.eigvalsh(gram @ gram.T / len(gram)).flip(0).clamp_min(1e-12).numpy()
    trace = float(eig.sum())
    return np.concatenate([np.log10(eig[:k]), [np.log10(trace), float(eig[0]) / trace]])
