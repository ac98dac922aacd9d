"""Benchmark 8b: the signal reaching the logits at initialisation, per proxy architecture.

Gain-fair evaluation divides an activation by its gain and, for the MLP, initialises its
Linear layers N(0, 1/fan_in) so that a unit-variance input keeps a unit second moment from
layer to layer. Do the other proxies (the conv nets with BatchNorm before each activation,
the transformer with LayerNorm) need the same? For every architecture, in ``raw`` and
``fair`` mode, with ReLU and with 2·relu (a scale the proxy should not reward), the model
is built exactly as a worker builds it (``workers.training.make_trainer``, fixed seed) and
E[logit^2] is measured on one batch of ``digits`` in training mode (batch statistics, as the
first training step sees it).

Read: where E[logit^2] under ``fair`` is the same for relu and 2·relu, the architecture
cannot reward scale at init; where it moves with the factor under ``raw``, it could.
"""

from __future__ import annotations

from typing import Any

GOAL = "record E[logit^2] at init per architecture and mode (no threshold: a measurement)"
CONFIG: dict[str, Any] = {
    "archs": ["mlp", "resnet", "mobilenetv2", "efficientnet", "transformer"],
    "dataset": "digits",
    "layers": ["max(x, 0)", "2 * max(x, 0)"],
    "seed": 0,
    "batch": 256,
}


def _second_moment(arch: str, text: str, mode: str, cache: Any) -> float:
    import torch

    from layerforge.workers.candidates import resolve_candidate
    from layerforge.workers.gain import GainNormalizedFactory, candidate_gain
    from layerforge.workers.tasks import ProxyTask
    from layerforge.workers.training import make_trainer

    candidate = resolve_candidate({"text": text, "space": "activation"})
    factory = candidate.factory
    if mode == "fair":
        factory = GainNormalizedFactory(factory, candidate_gain(candidate))
    task = ProxyTask(arch=arch, dataset=CONFIG["dataset"], seed=CONFIG["seed"], gain=mode)
    trainer = make_trainer(task, factory, "activation", cache=cache)
    model = trainer.model
    model.train()  # batch statistics, as in a training step (the model is thrown away)
    with torch.no_grad():
        x = trainer.dataset.val_x[: CONFIG["batch"]]
        return float(model(x).float().pow(2).mean())


def run(quick: bool = False) -> dict[str, Any]:
    """Measure E[logit^2] at init for every architecture, mode and layer."""
    import torch

    from layerforge.workers.datasets import DatasetCache

    torch.set_num_threads(1)
    cache = DatasetCache()
    archs = CONFIG["archs"][:2] if quick else CONFIG["archs"]
    rows = []
    for arch in archs:
        row: dict[str, Any] = {"arch": arch}
        for mode in ("raw", "fair"):
            values = [_second_moment(arch, text, mode, cache) for text in CONFIG["layers"]]
            row[f"{mode}: relu"] = values[0]
            row[f"{mode}: 2·relu"] = values[1]
            row[f"{mode}: ratio 2·relu / relu"] = values[1] / values[0] if values[0] else None
        rows.append(row)
    return {
        "name": "init_signal",
        "goal": GOAL,
        "met": None,
        "quick": quick,
        "config": CONFIG,
        "figures": {
            "headline": {
                r["arch"]: f"raw x{r['raw: ratio 2·relu / relu']:.2f}, "
                f"fair x{r['fair: ratio 2·relu / relu']:.2f}"
                for r in rows
            },
            "E[logit^2] at init": rows,
        },
        "note": (
            "ratio 1.00 under fair: the proxy cannot tell 2·relu from relu at init; the conv "
            "nets put BatchNorm before every activation, so only the activations feeding the "
            "pooling and the classifier carry a factor through"
        ),
    }
