"""The ``depth`` stage: does the activation still train when the network is deeper?

The search proxies are shallow (the default is a 2x128 MLP), and a function can train there and
nowhere deeper: ``abs(x)``, whose slope is bounded and so passes the stability stage, scored
80% on the 2x128 search MLP and diverged within 20 steps on the 3x256 held-out MLP
(benchmarks/RESULTS.md, B8). The stage trains the *depth probe*: an MLP of ``depth_layers``
hidden layers of ``depth_width`` units, initialised as gain-fair proxies initialise their MLPs
(N(0, 1/fan_in), the candidate divided by its gain), for ``depth_steps`` steps of that proxy's own schedule (learning rate,
warm-up, batch, data and seed); a NaN/Inf loss rejects.

A recipe can be too aggressive for a deeper network whatever the function: on ``digits`` at
batch 32 and lr 0.1 the probe diverges with relu, silu and gelu alike. So each proxy's probe is
*calibrated* first, once per process: the known-good functions of :data:`CALIBRATION_PANEL`
go through it, and if one of them diverges the probe cannot tell a shallow-only function from
a recipe deeper networks do not survive, and the stage passes every candidate, saying why. It
never rejects a function for what the panel's own members do.

Measured on the default activation proxy (mnist1d, lr 0.1, 1000-step schedule, batch 128;
6x128, 100 steps, seeds 0-2): ``abs(x)`` diverged at steps 45-79 in every seed, and so did the
search's held-out failures ``asinh(x) - x``, ``sin(x) - x``, ``min(x, 1) - x``,
``atan(x) * x`` and ``tanh(x) - x`` (benchmark 9 and the demo); the panel, leaky relu, mish,
sigmoid and ``sin(x)`` trained. The probe costs about 0.3 s on one CPU thread, against about
0.1 s for the quality stage and 1 s for a full evaluation on that proxy, so it runs after the
quality stage: only candidates that learn on the search proxy pay for it.

Only gain-fair evaluation is probed. Under ``gain: raw`` (PyTorch's default init, whose
Linear layers shrink the signal's second moment threefold) the probe measured scale: on
``digits`` relu stayed at chance loss through six layers while 2·relu and ``3 * x *
sigmoid(x)`` diverged, which is the artifact gain-fair evaluation exists to remove.

Norm-act layers are not probed here: their proxies are convnets whose every layer the
candidate normalizes, and the stability stage's adversarial test asks them the depth question.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layerforge.workers.errors import WorkersError
from layerforge.workers.rejection.config import Stage
from layerforge.workers.rejection.registry import register_stage
from layerforge.workers.rejection.run import EvaluationRun, Fail, Reject, describe, is_oom

__all__ = ["CALIBRATION_PANEL", "DepthProbeNet", "calibrate", "depth"]

#: Known-good activations every informative probe must train (the most fragile first, so an
#: uninformative probe is found after one or two runs).
CALIBRATION_PANEL = ("elu", "silu", "gelu", "relu", "tanh", "softplus")
#: (task, probe settings, device) -> None when the probe is informative, else why not
_CALIBRATIONS: dict[str, str | None] = {}


class DepthProbeNet(nn.Module):
    """``(Linear -> candidate) x layers -> Linear`` on flattened inputs: the search MLP's
    structure with more hidden layers."""

    def __init__(
        self,
        factory: Callable[[int], nn.Module],
        in_features: int,
        num_classes: int,
        layers: int,
        width: int,
    ):
        super().__init__()
        body: list[nn.Module] = []
        c = in_features
        for _ in range(layers):
            body += [nn.Linear(c, width), factory(width)]
            c = width
        self.body = nn.Sequential(*body)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the flattened input."""
        return self.fc(self.body(x.flatten(1)))


@dataclasses.dataclass
class _Probe:
    """One probe setting: the first proxy's task and data, the stage's sizes, the device."""

    run: EvaluationRun
    dataset: Any
    steps: int

    @property
    def where(self) -> str:
        cfg, task = self.run.config, self.run.tasks[0]
        return (
            f"the depth probe ({cfg.depth_layers}x{cfg.depth_width} MLP on {task.dataset}, "
            f"lr {task.lr:g})"
        )

    def train(self, factory: Callable[[int], nn.Module]) -> tuple[int | None, float]:
        """Train the probe with ``factory``'s layer: (the step by which it diverged or None,
        the last training loss). Leaves no trace on the global random state."""
        from layerforge.workers.gain import scale_keeping_init
        from layerforge.workers.training import Trainer

        run, task = self.run, self.run.tasks[0]
        cfg = run.config
        devices = [run.device] if run.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the proxies' runs see no trace of it
            torch.manual_seed(task.seed)
            net = DepthProbeNet(
                factory,
                math.prod(self.dataset.input_shape),
                self.dataset.num_classes,
                cfg.depth_layers,
                cfg.depth_width,
            )
            scale_keeping_init(net)
            trainer = Trainer(
                net,
                self.dataset,
                dataclasses.replace(task, arch="mlp", time_limit_s=None),
                device=run.device,
                kind="activation",
                memory_format="contiguous",
            )
            every = task.divergence_check_every
            for target in [*range(every, self.steps, every), self.steps]:
                run.deadline.check(str(Stage.DEPTH))
                trainer.run_until(target)
                if trainer.diverged:
                    return trainer.diverged_step, math.nan
        return None, trainer.train_loss


def _panel_factory(name: str) -> Callable[[int], nn.Module]:
    """A calibration built-in's gain-normalized layer factory."""
    from layerforge.workers.candidates import resolve_candidate
    from layerforge.workers.gain import GainNormalizedFactory, candidate_gain

    cand = resolve_candidate({"builtin": name}, "activation")
    return GainNormalizedFactory(cand.factory, candidate_gain(cand))


def calibrate(probe: _Probe) -> str | None:
    """None when every :data:`CALIBRATION_PANEL` function trains in ``probe`` (it can tell
    functions apart), else the reason it cannot; computed once per process and setting."""
    cfg, task = probe.run.config, probe.run.tasks[0]
    key = json.dumps(
        [
            dataclasses.asdict(task),
            cfg.depth_layers,
            cfg.depth_width,
            probe.steps,
            str(probe.run.device),
        ],
        sort_keys=True,
        default=str,
    )
    if key not in _CALIBRATIONS:
        verdict = None
        for name in CALIBRATION_PANEL:
            step, _loss = probe.train(_panel_factory(name))
            if step is not None:
                verdict = (
                    f"not informative on {task.name}: the known-good {name} diverges in it too "
                    f"(by step {step}), so the recipe, not the function, is what fails"
                )
                break
        _CALIBRATIONS[key] = verdict
    return _CALIBRATIONS[key]


@register_stage(Stage.DEPTH)
def depth(run: EvaluationRun) -> str:
    """Train the depth probe (module docstring) on the first proxy's data and schedule and
    reject at a NaN/Inf loss, where the calibration panel trains in it; norm-act layers
    pass untouched."""
    if run.cand.kind != "activation":
        return "not applicable: the depth probe is for activations"
    if not run.tasks:
        return "no proxy to take the schedule and data from"
    if run.tasks[0].gain != "fair":
        return (
            "skipped under raw evaluation: at PyTorch's default init a deeper network measures "
            "the function's scale, not its trainability (relu's signal vanishes through the "
            "probe, 2·relu's explodes); the probe runs under gain-fair evaluation"
        )
    from layerforge.workers.datasets import load_dataset

    cfg, task = run.config, run.tasks[0]
    try:
        dataset = load_dataset(
            task.dataset,
            run.device,
            seed=task.seed,
            cache=run.datasets_cache,
            **task.dataset_options,
        )
    except (WorkersError, ImportError) as exc:
        raise Fail(f"cannot load {task.dataset} for the depth probe: {exc}") from exc
    probe = _Probe(run, dataset, min(cfg.depth_steps, task.steps))
    uninformative = calibrate(probe)
    if uninformative is not None:
        return f"{probe.where} skipped: {uninformative}"
    try:
        step, loss = probe.train(run.factory)
    except Reject:
        raise
    except Exception as exc:
        if is_oom(exc):
            raise
        raise Reject(f"{probe.where} raised {describe(exc)}") from exc
    if step is not None:
        raise Reject(
            f"training diverged (NaN/Inf loss) by step {step} of {probe.where}, in which "
            f"{', '.join(CALIBRATION_PANEL)} train: the function trains in the shallow search "
            "network only"
        )
    return f"{probe.where}: loss {loss:.3g} after {probe.steps} steps"
