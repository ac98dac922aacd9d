"""The training loop of a proxy task: fast, reproducible, and never raising for a bad candidate.

- SGD with Nesterov momentum; weight decay on weight matrices and kernels only (not on biases,
  norm affines or a candidate's per-channel vectors); linear warm-up then cosine decay.
- Seeds fixed (``task.seed`` seeds the model init in :func:`run_proxy` and the batch sampler).
- Data already on the device; batches are index slices of an on-device permutation
  (:class:`workers.datasets.BatchSampler`); augmentation on the device.
- bf16 autocast on CUDA only; fp32 on CPU.
- Convnets train in the memory format :mod:`workers.memory_format` picks (channels_last where
  it was measured to pay, docs/memory_format.md); the optimizer is the fused SGD kernel
  where torch has one (the same update, a fraction of the per-step optimizer overhead).
- No per-step host syncs: losses are summed on the device and read back every
  ``task.divergence_check_every`` steps, which is when a NaN/Inf loss (divergence) or the time
  limit is noticed. Divergence stops the run and is reported in the result, never raised.

:class:`Trainer` can be paused and resumed (``run_until(step)``); the rejection protocol's
quality stage uses that to evaluate after 100 steps and then continue the same run to the full
budget instead of training twice.

A job can be stopped from outside: inside :func:`stop_flag` (a ``threading.Event``) every
training step first checks the flag and, once it is set, raises :class:`TrainingStopped`.
The local evaluator runs training in the campaign's own thread, so this is how a cancel
reaches a run that would otherwise train on for minutes.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerforge.workers.datasets import BatchSampler, DatasetCache, DeviceDataset, load_dataset
from layerforge.workers.gain import scale_keeping_init
from layerforge.workers.memory_format import convert_batch, convert_model, resolve_memory_format
from layerforge.workers.tasks import ProxyTask

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingStopped",
    "make_trainer",
    "run_proxy",
    "stop_flag",
    "train",
    "worker_id",
]

CURVE_POINTS = 8


class TrainingStopped(BaseException):
    """The run's stop flag was set: the job was cancelled, there is no result.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that the rejection protocol, which
    records every ``Exception`` of a candidate as a verdict, lets it through to whoever set
    the flag instead of turning a cancel into a "failed" candidate.
    """


_stop_flag: ContextVar[threading.Event | None] = ContextVar("layerforge_stop_flag", default=None)


@contextmanager
def stop_flag(event: threading.Event) -> Iterator[threading.Event]:
    """Within this block, training (in this thread or context) stops with
    :class:`TrainingStopped` at the first step after ``event`` is set."""
    token = _stop_flag.set(event)
    try:
        yield event
    finally:
        _stop_flag.reset(token)


def raise_if_stopped() -> None:
    """Raise :class:`TrainingStopped` when the current stop flag is set (a cheap check,
    made before every training step and before loading a dataset)."""
    flag = _stop_flag.get()
    if flag is not None and flag.is_set():
        raise TrainingStopped("the job was cancelled")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _json_float(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class TrainResult:
    arch: str
    dataset: str
    val_accuracy: float
    val_loss: float
    curve: list[tuple[int, float]]
    steps: int
    steps_per_second: float
    wall_seconds: float
    device: str
    worker_id: str
    diverged: bool = False
    diverged_step: int | None = None
    timed_out: bool = False
    planned_steps: int = 0
    num_params: int = 0
    train_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN/Inf become ``None``; the curve is a list of ``[step, loss]``."""
        d = asdict(self)
        for k in (
            "val_accuracy",
            "val_loss",
            "steps_per_second",
            "wall_seconds",
            "train_loss",
        ):
            d[k] = _json_float(d[k])
        d["curve"] = [[int(s), _json_float(v)] for s, v in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        d = dict(d)
        for k in ("val_loss", "train_loss"):
            if d.get(k) is None:
                d[k] = float("nan")
        d["curve"] = [(int(s), float("nan") if v is None else float(v)) for s, v in d["curve"]]
        return cls(**d)


def _to_cpu(value: Any) -> Any:
    """``value`` (nested dicts and lists of tensors) with every tensor moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _lr_at(step: int, task: ProxyTask) -> float:
    warm = round(task.warmup_fraction * task.steps)
    if warm > 0 and step < warm:
        return task.lr * (step + 1) / warm
    span = max(1, task.steps - warm)
    progress = min(1.0, (step - warm) / span)
    return task.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _make_optimizer(model: nn.Module, task: ProxyTask) -> torch.optim.SGD:
    """SGD (Nesterov momentum, decay on weight matrices and kernels only), fused when torch
    has a fused kernel for the parameters' device and dtype.

    The fused step is the same update as the per-tensor loop (equal to fp32 rounding): one
    kernel per parameter group instead of a handful of ops per parameter, which is a quarter
    of a small MLP's step on one CPU thread. Where torch refuses it (a device without the
    kernel, a non-float parameter) the default implementation is used.
    """
    groups = _param_groups(model, task.weight_decay)
    kwargs = dict(lr=_lr_at(0, task), momentum=task.momentum, nesterov=task.nesterov)
    params = [p for g in groups for p in g["params"]]
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.SGD(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):  # pragma: no cover - torch without it
            pass
    return torch.optim.SGD(groups, **kwargs)


class Trainer:
    """A resumable training run of ``model`` on ``dataset`` under ``task``.

    ``memory_format``: ``"auto"`` (default) trains a convnet in the format
    :func:`workers.memory_format.choose_memory_format` picks for ``task.arch``, ``kind`` (the
    candidate's kind, when known), the device and the model's layers; ``"contiguous"`` or ``"channels_last"``
    force one. The model is converted in place (as ``model.to(device)`` moves it), batches
    as they are sampled; :attr:`memory_format` says which format the run uses. The format
    changes speed, not results (beyond fp32 rounding).
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: DeviceDataset,
        task: ProxyTask,
        *,
        device: str | torch.device = "cpu",
        time_limit_s: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        kind: str | None = None,
        memory_format: str | torch.memory_format | None = "auto",
    ):
        self.device = torch.device(device)
        self.memory_format = resolve_memory_format(
            memory_format, task.arch, kind, self.device, model
        )
        self.model = convert_model(model.to(self.device), self.memory_format)
        self.dataset = dataset if dataset.device == self.device else dataset.to(self.device)
        self.task = task
        self.time_limit_s = time_limit_s if time_limit_s is not None else task.time_limit_s
        self.progress = progress
        self.sampler = BatchSampler(
            self.dataset,
            task.batch_size,
            seed=task.seed,
            augment=task.augment,
            memory_format=self.memory_format,
        )
        self.optimizer = _make_optimizer(self.model, task)
        self.step = 0
        self.diverged = False
        self.diverged_step: int | None = None
        self.timed_out = False
        self.curve: list[tuple[int, float]] = []
        self.train_loss = float("nan")
        self.train_seconds = 0.0
        self._started: float | None = None
        self._curve_targets = sorted(
            {max(1, round(task.steps * (i + 1) / CURVE_POINTS)) for i in range(CURVE_POINTS)}
        )
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._amp = self.device.type == "cuda"
        self.model.train()

    @property
    def stopped(self) -> bool:
        return self.diverged or self.timed_out

    def _check(self) -> None:
        """Read the summed loss back (one sync), note divergence, a curve point, the clock."""
        if self._loss_count == 0:
            return
        mean = self._loss_sum.item() / self._loss_count
        self._loss_sum.zero_()
        self._loss_count = 0
        self.train_loss = mean
        if not math.isfinite(mean):
            self.diverged = True
            self.diverged_step = self.step
            self.curve.append((self.step, mean))
            return
        while self._curve_targets and self._curve_targets[0] <= self.step:
            self._curve_targets.pop(0)
            if not self.curve or self.curve[-1][0] != self.step:
                self.curve.append((self.step, mean))
        if self.progress is not None:
            self.progress({"step": self.step, "steps": self.task.steps, "loss": mean})
        if self.time_limit_s is not None and self.elapsed() > self.time_limit_s:
            self.timed_out = True

    def elapsed(self) -> float:
        return self.train_seconds + (
            time.perf_counter() - self._started if self._started is not None else 0.0
        )

    def run_until(self, step: int | None = None) -> bool:
        """Train up to ``step`` (default: the task's ``steps``); False once stopped early."""
        target = min(self.task.steps, self.task.steps if step is None else int(step))
        if self.stopped:
            return False
        model, opt, task, sampler = self.model, self.optimizer, self.task, self.sampler
        every = task.divergence_check_every
        smoothing = task.label_smoothing
        amp = self._amp
        # what ``opt.zero_grad(set_to_none=True)`` does, without its per-step profiler scope
        # and grouping (~40 us a step on CPU, a few % of a small MLP's step)
        params = [p for group in opt.param_groups for p in group["params"]]
        stop = _stop_flag.get()
        self._started = time.perf_counter()
        try:
            while self.step < target:
                if stop is not None and stop.is_set():
                    raise TrainingStopped(f"the job was cancelled at step {self.step}")
                lr = _lr_at(self.step, task)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = sampler.next()
                # an autocast context only where it does something (bf16 on CUDA): entering
                # a disabled one costs ~10 us a step
                with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
                for p in params:
                    p.grad = None
                loss.backward()
                opt.step()
                self._loss_sum += loss.detach()
                self._loss_count += 1
                self.step += 1
                if (
                    self.step % every == 0
                    or self.step == target
                    or self.step in self._curve_targets[:1]
                ):
                    self._check()
                    if self.stopped:
                        break
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        finally:
            self.train_seconds += time.perf_counter() - self._started
            self._started = None
        return not self.stopped

    def state_dict(self) -> dict[str, Any]:
        """Everything the run needs to continue exactly where it is (weights, optimizer
        momentum, the sampler's position and random state, the step, the curve, the clock),
        with tensors on the CPU: a checkpoint another process or device can resume."""
        sampler = self.sampler
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "sampler": {
                "generator": sampler.generator.get_state(),
                "perm": sampler._perm.cpu(),
                "pos": sampler._pos,
                "epoch": sampler.epoch,
            },
            "step": self.step,
            "diverged": self.diverged,
            "diverged_step": self.diverged_step,
            "timed_out": self.timed_out,
            "curve": [[int(s), float(v)] for s, v in self.curve],
            "train_loss": float(self.train_loss),
            "train_seconds": float(self.train_seconds),
            "curve_targets": list(self._curve_targets),
            "loss_sum": float(self._loss_sum.item()),
            "loss_count": self._loss_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run :meth:`state_dict` saved (on this trainer's device): the next
        steps are the ones the saved run would have taken."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        sampler = state["sampler"]
        self.sampler.generator.set_state(sampler["generator"])
        self.sampler._perm = sampler["perm"].to(self.device)
        self.sampler._pos = int(sampler["pos"])
        self.sampler.epoch = int(sampler["epoch"])
        self.step = int(state["step"])
        self.diverged = bool(state["diverged"])
        self.diverged_step = state["diverged_step"]
        self.timed_out = bool(state["timed_out"])
        self.curve = [(int(s), float(v)) for s, v in state["curve"]]
        self.train_loss = float(state["train_loss"])
        self.train_seconds = float(state["train_seconds"])
        self._curve_targets = [int(t) for t in state["curve_targets"]]
        self._loss_sum = torch.full((), float(state["loss_sum"]), device=self.device)
        self._loss_count = int(state["loss_count"])

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation accuracy and mean loss (non-finite logits count as wrong)."""
        model, ds = self.model, self.dataset
        was_training = model.training
        model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        loss_sum = torch.zeros((), device=self.device)
        bs = self.task.eval_batch
        try:
            for i in range(0, ds.num_val, bs):
                x = convert_batch(ds.val_x[i : i + bs], self.memory_format)
                y = ds.val_y[i : i + bs]
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._amp):
                    logits = model(x).float()
                finite = torch.isfinite(logits).all(dim=1)
                correct += ((logits.argmax(dim=1) == y) & finite).sum()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
        finally:
            model.train(was_training)
        n = max(1, ds.num_val)
        return correct.item() / n, loss_sum.item() / n

    def result(self, evaluate: bool = True) -> TrainResult:
        if self.diverged or not evaluate:
            acc, loss = 0.0, float("nan")
        else:
            acc, loss = self.evaluate()
        secs = self.train_seconds
        return TrainResult(
            arch=self.task.arch,
            dataset=self.task.dataset,
            val_accuracy=acc,
            val_loss=loss,
            curve=list(self.curve),
            steps=self.step,
            steps_per_second=self.step / secs if secs > 0 else 0.0,
            wall_seconds=secs,
            device=str(self.device),
            worker_id=worker_id(),
            diverged=self.diverged,
            diverged_step=self.diverged_step,
            timed_out=self.timed_out,
            planned_steps=self.task.steps,
            num_params=sum(p.numel() for p in self.model.parameters()),
            train_loss=self.train_loss,
        )


def train(
    model: nn.Module,
    dataset: DeviceDataset,
    task: ProxyTask,
    *,
    device: str | torch.device = "cpu",
    time_limit_s: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    kind: str | None = None,
    memory_format: str | torch.memory_format | None = "auto",
) -> TrainResult:
    """Train ``model`` for ``task.steps`` steps and evaluate it (see :func:`_run_to_end`;
    ``kind`` and ``memory_format``: see :class:`Trainer`)."""
    return _run_to_end(
        Trainer(
            model,
            dataset,
            task,
            device=device,
            time_limit_s=time_limit_s,
            progress=progress,
            kind=kind,
            memory_format=memory_format,
        )
    )


def _run_to_end(trainer: Trainer) -> TrainResult:
    """Train to the task's ``steps`` and evaluate. A diverged run (NaN/Inf loss) stops early
    and reports ``diverged=True`` and accuracy 0; a run over ``time_limit_s`` stops and
    reports ``timed_out=True`` (and is evaluated as it is)."""
    trainer.run_until(trainer.task.steps)
    return trainer.result()


def make_trainer(
    task: ProxyTask,
    layer_factory: Callable[[int], nn.Module],
    kind: str,
    *,
    device: str | torch.device = "cpu",
    cache: DatasetCache | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    memory_format: str | torch.memory_format | None = "auto",
) -> Trainer:
    """Load the task's dataset (cached per process), build the model with a fixed seed.

    With ``task.gain == "fair"`` the MLP's Linear layers are initialised N(0, 1/fan_in)
    (:func:`workers.gain.scale_keeping_init`); dividing the candidate by its gain is the
    caller's part (the rejection protocol passes a :class:`workers.gain.GainNormalizedFactory`).

    ``memory_format`` goes to :class:`Trainer` (``"auto"``: the policy of
    :mod:`workers.memory_format` for ``task.arch``, ``kind`` and ``device``)."""
    from layerforge.workers.architectures import build_model

    raise_if_stopped()
    dataset = load_dataset(
        task.dataset, device, seed=task.seed, cache=cache, **task.dataset_options
    )
    torch.manual_seed(task.seed)
    model = build_model(
        task.arch,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        kind=kind,
        layer_factory=layer_factory,
        scale=task.scale,
    )
    if task.gain == "fair" and task.arch == "mlp" and kind == "activation":
        scale_keeping_init(model)
    return Trainer(
        model,
        dataset,
        task,
        device=device,
        time_limit_s=time_limit_s,
        progress=progress,
        kind=kind,
        memory_format=memory_format,
    )


def run_proxy(
    task: ProxyTask | dict[str, Any],
    layer_factory: Callable[[int], nn.Module],
    kind: str,
    *,
    device: str | torch.device = "cpu",
    cache: DatasetCache | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    memory_format: str | torch.memory_format | None = "auto",
) -> TrainResult:
    """Build ``task.arch`` with the candidate, train it on ``task.dataset``, evaluate it
    (``memory_format``: see :class:`Trainer`)."""
    task = ProxyTask.from_dict(task) if isinstance(task, dict) else task
    return _run_to_end(
        make_trainer(
            task,
            layer_factory,
            kind,
            device=device,
            cache=cache,
            time_limit_s=time_limit_s,
            progress=progress,
            memory_format=memory_format,
        )
    )
