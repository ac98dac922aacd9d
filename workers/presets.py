"""Named proxy presets: proxies whose settings were chosen by a measurement, by name.

A campaign spec's proxy may be ``{"preset": NAME}`` plus any overrides
(``{"preset": "normact-small-batch", "steps": 600}``); :func:`expand_preset` turns it into the
full proxy dict before :class:`workers.tasks.ProxyTask` checks it, so the stored spec holds
the settings the campaign trained with, not a name whose meaning could change later.

``normact-small-batch``: the CPU-scale pre-activation ResNet on a harder generated image task
at a small batch. On ``resnet``/``digits`` at batch 128 every norm-act built-in scores
97-98% (the panel's spread is within seed noise); EvoNorm's claim is about small batches.
benchmarks/normact_fidelity.py (B10a in benchmarks/RESULTS.md) measures the norm-act panel
on this dataset at batch 2 and 4. The setting must do two things: spread the panel by at
least 3 seed SDs (the discrimination ratio of :mod:`search.fidelity`) and let a layer without
batch statistics beat BN-ReLU, which is EvoNorm's claim at small batch. At batch 4 with the
default lr 0.1 for 300 steps (this preset before) only the first held: BN-ReLU beat GN, LN
and IN-ReLU by more than 2 SD and EvoNorm-S0 did not beat it. lr 0.1 is the large-batch lr
of 128-sample batches, a 32x larger step per sample at batch 4; at lr 0.01 trained for 1200
steps (2.4 epochs at batch 2 instead of 0.6 at batch 4) EvoNorm-S0 beats BN-ReLU.
"""

from __future__ import annotations

import copy
from typing import Any

from layerforge.workers.errors import InvalidConfigError

__all__ = ["PRESET_FIELD", "PROXY_PRESETS", "expand_preset"]

PRESET_FIELD = "preset"

#: The generated image task harder than ``digits``: 10 classes of smooth prototypes with
#: noise std 1.5 and a 0.8-weighted distractor prototype (``workers.datasets._load_synthetic``).
HARD_SYNTHETIC_OPTIONS: dict[str, Any] = {
    "num_train": 2000,
    "num_val": 1000,
    "size": 16,
    "noise": 1.5,
    "distractor": 0.8,
}

PROXY_PRESETS: dict[str, dict[str, Any]] = {
    "normact-small-batch": {
        "arch": "resnet",
        "dataset": "synthetic",
        "dataset_options": HARD_SYNTHETIC_OPTIONS,
        "batch_size": 2,
        "lr": 0.01,
        "steps": 1200,
    },
}


def expand_preset(proxy: dict[str, Any]) -> dict[str, Any]:
    """The proxy dict with its ``preset`` replaced by the preset's settings (the proxy's own
    fields override the preset's); a proxy without ``preset`` is returned unchanged.
    Raises :class:`InvalidConfigError` naming the ``preset`` field when the name is unknown
    or not a string."""
    if PRESET_FIELD not in proxy:
        return proxy
    name = proxy[PRESET_FIELD]
    if not isinstance(name, str) or name not in PROXY_PRESETS:
        raise InvalidConfigError(
            PRESET_FIELD,
            f"unknown proxy preset {name!r}; known presets: {', '.join(sorted(PROXY_PRESETS))}",
        )
    expanded = copy.deepcopy(PROXY_PRESETS[name])
    expanded.update({k: v for k, v in proxy.items() if k != PRESET_FIELD})
    return expanded
