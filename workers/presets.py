"""Named proxy presets: proxies whose settings were chosen by a measurement, by name.

A campaign spec's proxy may be ``{"preset": NAME}`` plus any overrides
(``{"preset": "normact-small-batch", "steps": 600}``); :func:`expand_preset` turns it into the
full proxy dict before :class:`workers.tasks.ProxyTask` checks it, so the stored spec holds
the settings the campaign trained with, not a name whose meaning could change later.

``normact-small-batch``: the CPU-scale pre-activation ResNet on the generated ``gratings``
task (:data:`GRATINGS_OPTIONS`, :func:`workers.datasets.make_gratings`) at batch 2, lr 0.01,
1200 steps. benchmarks/normact_fidelity.py (B10a) measures the norm-act panel there; a
setting qualifies when (a) the panel's spread is at least 3 seed SDs (the discrimination
ratio of :mod:`search.fidelity`), (b) a linear network (every norm-act layer replaced by
``x * weight + bias``) stays near chance, far below the built-ins, and (c) a layer without
batch statistics beats BN-ReLU by more than 2 pooled seed SDs, which is EvoNorm's
small-batch claim.

Why this task: on ``resnet``/``digits`` at batch 128 every built-in scores 97-98% (no
spread). The preset before trained on ``synthetic`` (noisy class prototypes), where (a) and
(c) held but the linear network scored 72.3 ± 0.9%, above every built-in: that task is nearly
linearly separable, so it rewarded layers for not hurting training, and the norm-act search
on it (B10) "won" with ``tanh(x) * weight + bias``, no statistic at all. A gratings class is
the orientation of the strongest of two random-phase gratings in noise; every class's mean
image is zero, so anything linear in the input is at chance (12.5% for 8 classes) and a
layer scores only for what it adds: rectification, and normalization that keeps the energy
of a channel comparable across samples. Batch 4 at lr 0.02 saturates (BN-ReLU and EvoNorm-S0
both about 90%); batch 2 at lr 0.02 makes GN/LN-ReLU and EvoNorm-S0 unstable (seed SDs
16-34 points); batch 2 at lr 0.01 for 1200 steps (1.2 epochs) is the setting B10a reports
(benchmarks/results/normact_fidelity.json, 3 seeds): discrimination 4.44; EvoNorm-B0
89.5 ± 1.2, EvoNorm-S0 88.2 ± 1.6, BN-ReLU 67.5 ± 11.1, GN-ReLU 64.3 ± 16.1, LN-ReLU
60.0 ± 26.7, IN-ReLU 12.1 ± 1.0 (instance statistics erase a channel's energy, which is the
class); the linear network 12.4 ± 0.7 (chance 12.5, 7.0 SD below BN-ReLU); EvoNorm-S0 beats
BN-ReLU by 2.62 pooled SD and ReLU without normalization (67.4 ± 11.4) by 2.57. Seed SDs of
the BN/GN/LN/no-norm ReLU networks are 11-27 points at batch 2: compare layers over 3+ seeds.

What it does not do: make normalization necessary. The CPU-scale ResNet (8 layers) trains at
batch 2 without any norm, and an activation alone can beat every norm-act built-in: B10's
searches on this preset (benchmarks/results/normact_rediscovery.json) confirmed
``max(tanh(x), x)`` at 91.7 ± 0.5% on the held-out variant (EvoNorm-B0 90.9 ± 1.0, BN-ReLU
67.6 ± 4.0) and no winner with a statistic. A search meant to rediscover EvoNorm needs a
deeper proxy, where un-normalized networks fail, or a space that requires a statistic.
"""

from __future__ import annotations

import copy
from typing import Any

from layerforge.workers.errors import InvalidConfigError

__all__ = ["GRATINGS_OPTIONS", "PRESET_FIELD", "PROXY_PRESETS", "expand_preset"]

PRESET_FIELD = "preset"

#: The generated gratings task of the norm-act preset, every option spelled out (so that the
#: preset does not change meaning when a loader default does): 8 orientations, 16 x 16 pixels,
#: one channel, 2000 training and 1000 validation images, noise std 1, a distractor grating of
#: 0.25-0.5 of the class grating's amplitude at another class's orientation.
GRATINGS_OPTIONS: dict[str, Any] = {
    "num_classes": 8,
    "size": 16,
    "channels": 1,
    "num_train": 2000,
    "num_val": 1000,
    "noise": 1.0,
    "distractor": 0.5,
    "min_amplitude": 0.5,
    "min_frequency": 2.0,
    "max_frequency": 4.0,
    "jitter": 0.25,
    "data_seed": 1234,
}

PROXY_PRESETS: dict[str, dict[str, Any]] = {
    "normact-small-batch": {
        "arch": "resnet",
        "dataset": "gratings",
        "dataset_options": GRATINGS_OPTIONS,
        "batch_size": 2,
        "lr": 0.01,
        "steps": 1200,
    },
}


def expand_preset(proxy: dict[str, Any]) -> dict[str, Any]:
    """The proxy dict with its ``preset`` replaced by the preset's settings (the proxy's own
    fields override the preset's); a proxy without ``preset`` is returned unchanged.

    ``dataset_options`` override option by option while the dataset stays the preset's
    (``{"preset": ..., "dataset_options": {"data_seed": 99}}`` is the preset's task drawn with
    another seed, the rest as the preset has it); a proxy that names another dataset brings
    its own options only. Raises :class:`InvalidConfigError` naming the ``preset`` field when
    the name is unknown or not a string."""
    if PRESET_FIELD not in proxy:
        return proxy
    name = proxy[PRESET_FIELD]
    if not isinstance(name, str) or name not in PROXY_PRESETS:
        raise InvalidConfigError(
            PRESET_FIELD,
            f"unknown proxy preset {name!r}; known presets: {', '.join(sorted(PROXY_PRESETS))}",
        )
    expanded = copy.deepcopy(PROXY_PRESETS[name])
    own = {k: v for k, v in proxy.items() if k != PRESET_FIELD}
    options = own.get("dataset_options")
    same_dataset = own.get("dataset", expanded.get("dataset")) == expanded.get("dataset")
    if same_dataset and isinstance(options, dict):
        own["dataset_options"] = {**expanded.get("dataset_options", {}), **options}
    elif not same_dataset:
        expanded.pop("dataset_options", None)
    expanded.update(own)
    return expanded
