"""Benchmark 5: evaluation throughput of the workers' training loop against a plain loop.

For each proxy (``mlp``/``mnist1d`` and ``resnet``/``digits`` at CPU scale, the ReLU built-in,
batch 128, no augmentation so both loops do the same work) the workers' loop
(``workers.training.make_trainer(...).run_until(steps)``: data already in tensors, batches by
index slicing of an on-device permutation, no per-step host sync) is timed against a plain
PyTorch loop on the same model (same seed), data, optimizer settings (SGD + Nesterov, the same
parameter groups and learning-rate schedule) and steps: a ``torch.utils.data.DataLoader`` over
a ``TensorDataset`` (shuffle, batch 128, drop_last), ``zero_grad / forward / backward / step``.
Both loops alternate for several rounds in the same process; the figure is the ratio of median
steps per second (ours / plain).

The workers do not train several candidates at once (no horizontal fusion, vmap or grouped
layers in ``workers/``), so there is no fused-vs-sequential comparison to make; that is noted in
the result.

Goal: ratio >= 1.0 steps/s on every proxy.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

GOAL = "workers' loop steps/s >= plain DataLoader loop steps/s (ratio >= 1.0) on every proxy"
CONFIG: dict[str, Any] = {
    "proxies": [{"arch": "mlp", "dataset": "mnist1d"}, {"arch": "resnet", "dataset": "digits"}],
    "layer": "relu", "kind": "activation", "batch_size": 128, "steps": 200, "quick_steps": 20,
    "rounds": 3, "quick_rounds": 1, "augment": False, "seed": 0,
    "threads": 1,  # an evaluator actor reserves one CPU (LAYERFORGE_WORKER_CPUS=1)
}


def _task(proxy: dict[str, Any], steps: int):
    from workers.tasks import ProxyTask

    return ProxyTask(arch=proxy["arch"], dataset=proxy["dataset"], steps=steps,
                     batch_size=CONFIG["batch_size"], augment=CONFIG["augment"], seed=CONFIG["seed"])


def _ours(task, factory, cache) -> float:
    from workers.training import make_trainer

    trainer = make_trainer(task, factory, CONFIG["kind"], cache=cache)
    t0 = time.perf_counter()
    trainer.run_until(task.steps)
    return task.steps / (time.perf_counter() - t0)


def _plain(task, factory, cache) -> float:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from workers.architectures import build_model
    from workers.datasets import load_dataset
    from workers.training import _lr_at, _param_groups

    ds = load_dataset(task.dataset, "cpu", seed=task.seed, cache=cache)
    torch.manual_seed(task.seed)
    model = build_model(task.arch, input_shape=ds.input_shape, num_classes=ds.num_classes,
                        kind=CONFIG["kind"], layer_factory=factory, scale=task.scale)
    model.train()
    opt = torch.optim.SGD(_param_groups(model, task.weight_decay), lr=task.lr,
                          momentum=task.momentum, nesterov=task.nesterov)
    loader = DataLoader(TensorDataset(ds.train_x, ds.train_y), batch_size=task.batch_size,
                        shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(task.seed))
    step = 0
    t0 = time.perf_counter()
    while step < task.steps:
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, task)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            if step >= task.steps:
                break
    return task.steps / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict[str, Any]:
    from grammar import get_builtin, layer_factory
    from workers.datasets import DatasetCache

    import torch

    torch.set_num_threads(CONFIG["threads"])
    cache = DatasetCache()
    factory = layer_factory(get_builtin(CONFIG["layer"]))
    steps = CONFIG["quick_steps"] if quick else CONFIG["steps"]
    rounds = CONFIG["quick_rounds"] if quick else CONFIG["rounds"]
    rows = []
    for proxy in CONFIG["proxies"]:
        task = _task(proxy, steps)
        _ours(_task(proxy, 5), factory, cache)  # warm-up: dataset load, allocator
        _plain(_task(proxy, 5), factory, cache)
        ours, plain = [], []
        for r in range(rounds):
            if r % 2:
                plain.append(_plain(task, factory, cache))
                ours.append(_ours(task, factory, cache))
            else:
                ours.append(_ours(task, factory, cache))
                plain.append(_plain(task, factory, cache))
        o, p = statistics.median(ours), statistics.median(plain)
        rows.append({"proxy": f"{proxy['arch']}/{proxy['dataset']}", "ours_steps_per_s": round(o, 1),
                     "plain_dataloader_steps_per_s": round(p, 1), "ratio": round(o / p, 3),
                     "met": o / p >= 1.0, "rounds": rounds, "steps": steps})
    return {
        "name": "training_throughput",
        "goal": GOAL,
        "met": all(r["met"] for r in rows),
        "figures": {"headline": {r["proxy"]: f"{r['ratio']:.2f}x" for r in rows}, "rows": rows,
                    "multi_candidate_training": "not implemented in workers/: candidates train one "
                                                "after another, so there is no fused comparison"},
        "note": "the workers' loop slices batches from tensors already in memory; the DataLoader "
                "collates per-sample tensors in Python each step" if all(r["met"] for r in rows) else
                "see rows: the loop that is slower loses on per-step Python overhead",
        "config": {**CONFIG, "quick": quick},
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=True)["figures"], indent=1))
