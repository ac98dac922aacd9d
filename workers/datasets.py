"""Datasets held as device tensors, with an on-device batch sampler and augmentation.

Every dataset is loaded once per process (per worker) into a :class:`DeviceDataset` whose
``train_x/train_y/val_x/val_y`` live on the target device; batches are index slices of an
on-device permutation, so the hot loop never touches a DataLoader or the host.

Built in:

- ``digits``: scikit-learn's 8x8 digits (1797 images, 10 classes), offline.
- ``mnist1d``: MNIST-1D (Greydanus 2020) generated here with NumPy, sample for sample the
  data of the ``mnist1d`` package's ``make_dataset`` (seed 42), without its download path and
  without its run-time imports (matplotlib, requests, scipy); a vector of 40 values, or a
  ``(1, 40)`` sequence with ``as_sequence=True``.
- ``synthetic``: generated images (``modality="image"``) or sequences
  (``modality="sequence"``) of chosen size and class count: shifted, rescaled class prototypes
  with a distractor prototype mixed in and noise; learnable, but not linearly trivial.
- ``gratings``: generated oriented gratings with a random phase (:func:`make_gratings`): the
  class is the orientation of the strongest grating and every class's mean image is zero, so
  a network linear in its input stays at chance while a small ReLU convnet learns it; the
  norm-act proxy preset trains on it (workers/presets.py).
- ``cifar10``, ``cifar100`` (the "python version" pickle batches), ``mnist`` and
  ``fashion_mnist`` (the idx files, gzipped or not), read with NumPy from a local folder
  (``root``, default ``$LAYERFORGE_DATA_DIR`` or ``~/.cache/layerforge/data``) or downloaded
  there with the standard library (``download=True``), checksums verified. See
  :func:`vision_folder` for where each one's files go.

The train/validation split is deterministic in ``seed``. For the image datasets the
validation set is a held-out part of the official training set (``val_source="holdout"``,
as in the EvoNorm search; the official test set stays untouched for re-ranking) or the official
test set (``val_source="test"``).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import pickle
import shutil
import tarfile
import tempfile
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layerforge.workers.errors import DatasetUnavailableError, InvalidConfigError, UnknownNameError
from layerforge.workers.memory_format import convert_batch, torch_memory_format

__all__ = [
    "DATASETS",
    "BatchSampler",
    "DatasetCache",
    "DeviceDataset",
    "augment_batch",
    "clear_cache",
    "default_data_root",
    "download_dataset",
    "make_gratings",
    "make_mnist1d",
    "read_cifar",
    "read_idx",
    "vision_folder",
    "load_counts",
    "load_dataset",
    "DATASET_OPTIONS",
    "DatasetOption",
    "validate_dataset_options",
]


@dataclass
class DeviceDataset:
    """A dataset as tensors on one device (TensorDataset-like: ``len`` and indexing work)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    modality: str  # "image" | "vector" | "sequence"
    augment: str | None = None  # "crop_flip" | "crop" | None
    crop_padding: int = 4
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_x.shape[0])

    def __len__(self) -> int:
        return self.num_train

    def __getitem__(self, index):
        return self.train_x[index], self.train_y[index]

    def to(self, device: str | torch.device) -> DeviceDataset:
        device = torch.device(device)
        return DeviceDataset(
            self.name,
            self.train_x.to(device),
            self.train_y.to(device),
            self.val_x.to(device),
            self.val_y.to(device),
            self.num_classes,
            self.input_shape,
            self.modality,
            self.augment,
            self.crop_padding,
            dict(self.info),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "modality": self.modality,
            "augment": self.augment,
            "device": str(self.device),
        }


# --------------------------------------------------------------------------- sampling


def augment_batch(
    x: torch.Tensor, mode: str | None, padding: int, generator: torch.Generator
) -> torch.Tensor:
    """Random crop with zero padding (and horizontal flip for ``crop_flip``) on the device.

    Vectorised over the batch: one pad, one gather, one ``where``; no Python loop per image.
    """
    if not mode or x.dim() != 4:
        return x
    n, c, h, w = x.shape
    dev = x.device
    p = padding
    xp = F.pad(x, (p, p, p, p))
    oy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
    rows = (torch.arange(h, device=dev).unsqueeze(0) + oy).view(n, 1, h, 1)
    cols = (torch.arange(w, device=dev).unsqueeze(0) + ox).view(n, 1, 1, w)
    xr = torch.gather(xp, 2, rows.expand(n, c, h, w + 2 * p))  # rows of the crop
    out = torch.gather(xr, 3, cols.expand(n, c, h, w))  # then its columns
    if mode == "crop_flip":
        flip = torch.rand((n, 1, 1, 1), device=dev, generator=generator) < 0.5
        out = torch.where(flip, out.flip(3), out)
    return out


class BatchSampler:
    """Endless on-device sampler: a fresh permutation per epoch, batches by index slicing.

    ``next()`` returns ``(x, y)`` on the dataset's device, augmented when the dataset asks for
    it, 4-D image batches in ``memory_format`` (``"contiguous"`` or ``"channels_last"``, see
    :mod:`workers.memory_format`; the dataset itself is never converted, each batch is). All
    randomness comes from one generator seeded with ``seed`` (on the data's device), so a run
    is reproducible, and the batches' values do not depend on the memory format.
    """

    def __init__(
        self,
        dataset: DeviceDataset,
        batch_size: int,
        seed: int = 0,
        augment: bool = True,
        memory_format: str = "contiguous",
    ):
        if batch_size < 1:
            raise InvalidConfigError("batch_size", f"must be >= 1, got {batch_size}")
        torch_memory_format(memory_format)  # validates the name
        self.memory_format = memory_format
        self.dataset = dataset
        self.batch_size = min(int(batch_size), dataset.num_train)
        self.augment = augment and dataset.augment is not None
        self.generator = torch.Generator(device=dataset.device)
        self.generator.manual_seed(int(seed))
        self._perm = self._new_perm()
        self._pos = 0
        self.epoch = 0

    def _new_perm(self) -> torch.Tensor:
        return torch.randperm(
            self.dataset.num_train, device=self.dataset.device, generator=self.generator
        )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos + self.batch_size > self._perm.numel():
            self._perm = self._new_perm()
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        x = self.dataset.train_x.index_select(0, idx)
        y = self.dataset.train_y.index_select(0, idx)
        if self.augment:
            x = augment_batch(x, self.dataset.augment, self.dataset.crop_padding, self.generator)
        if self.memory_format != "contiguous":
            x = convert_batch(x, self.memory_format)
        return x, y

    __next__ = next

    def __iter__(self):
        return self


# --------------------------------------------------------------------------- helpers


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def _standardize(train: np.ndarray, val: np.ndarray, axes: tuple[int, ...]):
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-6
    return (train - mean) / std, (val - mean) / std


def _tensors(name, tx, ty, vx, vy, **kw) -> DeviceDataset:
    return DeviceDataset(
        name=name,
        train_x=torch.as_tensor(np.ascontiguousarray(tx), dtype=torch.float32),
        train_y=torch.as_tensor(np.asarray(ty), dtype=torch.long),
        val_x=torch.as_tensor(np.ascontiguousarray(vx), dtype=torch.float32),
        val_y=torch.as_tensor(np.asarray(vy), dtype=torch.long),
        **kw,
    )


def _check_options(name: str, options: dict, allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidConfigError(
            f"dataset_options.{unknown[0]}",
            f"unknown option for dataset {name!r}; valid options: {', '.join(sorted(allowed)) or 'none'}",
        )


def default_data_root() -> Path:
    """``$LAYERFORGE_DATA_DIR`` or ``~/.cache/layerforge/data``."""
    env = os.environ.get("LAYERFORGE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "layerforge" / "data"


# --------------------------------------------------------------------------- loaders


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as ``(images (1797, 8, 8) float64, targets int64)``.

    Read straight from the CSV that scikit-learn ships (what ``load_digits`` parses), so a
    worker process does not pay the 1-2 s import of ``sklearn.datasets``; falls back to
    ``load_digits`` where that file is not where scikit-learn keeps it.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _load_digits(*, seed: int, val_fraction: float = 0.2, **options) -> DeviceDataset:
    _check_options("digits", options, set())
    images, y = digits_arrays()
    x = images.astype(np.float32)[:, None, :, :] / 16.0  # (1797, 1, 8, 8)
    tr, va = _split(len(y), val_fraction, seed)
    tx, vx = _standardize(x[tr], x[va], (0, 2, 3))
    return _tensors(
        "digits",
        tx,
        y[tr],
        vx,
        y[va],
        num_classes=10,
        input_shape=(1, 8, 8),
        modality="image",
    )


# MNIST-1D's templates (mnist1d.data.get_templates): one 12-point curve per digit.
_MNIST1D_TEMPLATES = np.asarray(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)


def _interp_linear(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` resampled to ``n`` points on [0, 1] along its last axis, as
    ``scipy.interpolate.interp1d(kind="linear")`` computes it (same index choice and the same
    arithmetic, so the same floats); rows of a 2-D ``x`` are resampled independently."""
    scale = np.linspace(0, 1, x.shape[-1])
    new_scale = np.linspace(0, 1, n)
    hi = np.clip(np.searchsorted(scale, new_scale), 1, len(scale) - 1)
    lo = hi - 1
    slope = (x[..., hi] - x[..., lo]) / (scale[hi] - scale[lo])
    return slope * (new_scale - scale[lo]) + x[..., lo]


def _gaussian_smooth(x: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` of each row of a 2-D ``x`` (truncate 4, mode
    ``reflect``). One ``np.correlate`` per row: it adds in the order the package's samples
    were made with, so the floats are the same."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / sigma**2 * offsets**2)
    weights /= weights.sum()
    padded = np.pad(x, [(0, 0), (radius, radius)], mode="symmetric")
    return np.stack([np.correlate(row, weights, mode="valid") for row in padded])


def make_mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D's samples and labels, ``(num_samples, 40)`` float64 and ``(num_samples,)``.

    The generator of the ``mnist1d`` package (``make_dataset`` with its default arguments:
    pad 36-60 zeros, dilate, scale by 1 +- 0.2, translate up to 48, correlated noise where the
    signal is zero, iid noise 0.02, shear 0.75, subsample to 40), drawing from one
    ``RandomState(seed)`` in the package's order, so the samples are the package's own; the
    global random state is left alone.
    Rows are shuffled and standardized like the package's. The draws are made sample by
    sample, in the package's order; the arithmetic runs on every sample at once (20,000
    samples: 0.4 s against 2.4 s sample by sample, same process, same floats).
    """
    rng = np.random.RandomState(int(seed))
    templates = _MNIST1D_TEMPLATES.copy()
    templates -= templates.mean(1, keepdims=True)
    templates /= templates.std(1, keepdims=True)
    templates -= templates[:, :1]
    templates /= 6.0
    per_class = int(num_samples) // len(templates)
    padding, template_len, final_len = (36, 60), 12, 40
    length = template_len + padding[-1]
    total = per_class * len(templates)
    pads = np.empty(total, dtype=np.int64)
    scales = np.empty(total)
    shifts = np.empty(total, dtype=np.int64)
    smooth_noise = np.empty((total, length))
    iid_noise = np.empty((total, length))
    shears = np.empty(total)
    for i in range(total):
        pads[i] = padding[0] + int(rng.rand() * (padding[1] - padding[0] + 1))
        scales[i] = 1 + 0.4 * (rng.rand() - 0.5)
        shifts[i] = rng.choice(48)
        smooth_noise[i] = rng.randn(length)
        iid_noise[i] = rng.randn(length)
        shears[i] = 0.75 * (rng.rand() - 0.5)
    labels = np.repeat(np.arange(len(templates), dtype=np.int64), per_class)
    # the dilated template depends only on (label, pad): one table of every pair
    dilated = np.empty((len(templates), padding[1] - padding[0] + 1, length))
    for label, template in enumerate(templates):
        for pad in range(padding[0], padding[1] + 1):
            signal = np.concatenate([template + 1e-8, np.zeros(pad)])
            dilated[label, pad - padding[0]] = _interp_linear(signal, length)
    x = dilated[labels, pads - padding[0]] * scales[:, None]
    x = x[np.arange(total)[:, None], (np.arange(length)[None, :] - shifts[:, None]) % length]
    mask = x != 0
    x = mask * x + (1 - mask) * _gaussian_smooth(0.25 * smooth_noise)
    x = x + 2e-2 * iid_noise
    x = x - shears[:, None] * np.linspace(-0.5, 0.5, length)
    data = _interp_linear(x, final_len)
    order = rng.permutation(total)
    data, labels = data[order], labels[order]
    return (data - data.mean()) / data.std(), labels


def _load_mnist1d(
    *,
    seed: int,
    num_samples: int = 5000,
    as_sequence: bool = False,
    val_fraction: float = 0.2,
    **options,
) -> DeviceDataset:
    """MNIST-1D generated here (:func:`make_mnist1d`, data seed 42, never downloaded).

    ``seed`` picks the train/validation split; the samples themselves use MNIST-1D's seed 42,
    so every worker sees the same data.
    """
    _check_options("mnist1d", options, set())
    x64, y = make_mnist1d(int(num_samples))
    x = x64.astype(np.float32)
    tr, va = _split(len(y), val_fraction, seed)
    tx, vx = _standardize(x[tr], x[va], (0,))
    shape: tuple[int, ...] = (40,)
    modality = "vector"
    if as_sequence:
        tx, vx = tx[:, None, :], vx[:, None, :]
        shape, modality = (1, 40), "sequence"
    return _tensors(
        "mnist1d",
        tx,
        y[tr],
        vx,
        y[va],
        num_classes=10,
        input_shape=shape,
        modality=modality,
    )


def _smooth_noise(
    gen: torch.Generator, shape: tuple[int, ...], low: tuple[int, ...]
) -> torch.Tensor:
    """Low-frequency random patterns: coarse noise upsampled to ``shape[-len(low):]``."""
    lead = shape[: len(shape) - len(low)]
    coarse = torch.randn(*lead, *low, generator=gen)
    if len(low) == 2:
        out = F.interpolate(coarse, size=shape[-2:], mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(coarse, size=shape[-1:], mode="linear", align_corners=False)
    return out / out.flatten(1).std(dim=1).view(-1, *([1] * (out.dim() - 1)))


def _load_synthetic(
    *,
    seed: int,
    modality: str = "image",
    num_classes: int = 10,
    size: int = 16,
    channels: int = 3,
    length: int = 32,
    num_train: int = 2000,
    num_val: int = 500,
    noise: float = 0.8,
    distractor: float = 0.5,
    max_shift: int = 2,
    data_seed: int = 1234,
    **options,
) -> DeviceDataset:
    """Generated images ``(channels, size, size)`` or sequences ``(channels, length)``.

    Each class has a smooth random prototype. A sample is its class prototype, circularly
    shifted by up to ``max_shift``, scaled by a random gain, plus ``distractor`` times a random
    other prototype, plus Gaussian noise of std ``noise``. The distractor and noise keep a
    linear model well below perfect; a small convnet learns it.
    """
    _check_options("synthetic", options, set())
    if modality not in ("image", "sequence"):
        raise InvalidConfigError(
            "dataset_options.modality",
            f"must be 'image' or 'sequence', got {modality!r}",
        )
    if num_classes < 2:
        raise InvalidConfigError("dataset_options.num_classes", "must be >= 2")
    gen = torch.Generator().manual_seed(int(data_seed))
    if modality == "image":
        spatial: tuple[int, ...] = (size, size)
        low: tuple[int, ...] = (max(2, size // 4), max(2, size // 4))
    else:
        spatial, low = (length,), (max(2, length // 4),)
    protos = _smooth_noise(gen, (num_classes, channels, *spatial), low)
    total = num_train + num_val
    y = torch.randint(0, num_classes, (total,), generator=gen)
    other = (y + torch.randint(1, num_classes, (total,), generator=gen)) % num_classes
    gain = 0.7 + 0.6 * torch.rand(total, generator=gen)
    x = protos[y] * gain.view(-1, *([1] * (protos.dim() - 1)))
    x = x + distractor * protos[other]
    dims = tuple(range(2, x.dim()))
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (total, len(dims)), generator=gen)
        for i in range(total):  # generation only, not the hot loop
            x[i] = torch.roll(
                x[i], shifts=tuple(shifts[i].tolist()), dims=tuple(d - 1 for d in dims)
            )
    x = x + noise * torch.randn(x.shape, generator=gen)
    x = (x - x.mean()) / x.std()
    # the split seed permutes which samples are validation
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    tr, va = perm[num_val:], perm[:num_val]
    return DeviceDataset(
        name="synthetic",
        train_x=x[tr].contiguous(),
        train_y=y[tr].contiguous(),
        val_x=x[va].contiguous(),
        val_y=y[va].contiguous(),
        num_classes=num_classes,
        input_shape=(channels, *spatial),
        modality=modality,
        augment=None,
    )


def make_gratings(
    num_samples: int,
    *,
    num_classes: int = 8,
    size: int = 16,
    channels: int = 1,
    noise: float = 1.0,
    distractor: float = 0.5,
    min_amplitude: float = 0.5,
    min_frequency: float = 2.0,
    max_frequency: float = 4.0,
    jitter: float = 0.25,
    data_seed: int = 1234,
) -> tuple[np.ndarray, np.ndarray]:
    """Oriented gratings with a random phase: images ``(num_samples, channels, size, size)``
    float32 (not standardized) and balanced labels ``(num_samples,)``, deterministic in
    ``data_seed``.

    Class ``k`` of ``K`` is an orientation, ``pi * (k + offset) / K`` (``offset`` in [0, 1) drawn
    from ``data_seed``, so another seed is another task), jittered per sample by up to
    ``jitter`` of the spacing between classes either way. A sample is
    ``A * cos(2 pi f (u cos t + v sin t) + phase)`` with ``f`` uniform in
    ``[min_frequency, max_frequency]`` cycles per image, ``phase`` uniform in [0, 2 pi), ``A``
    uniform in ``[min_amplitude, 1]``, times a random gain in [0.5, 1.5] per channel; plus a
    weaker grating at another class's orientation (amplitude ``distractor * A`` times a uniform
    [0.5, 1] factor, its own phase and frequency) and white noise of std ``noise``.

    Why: the phase is uniform, so every class's mean image is exactly zero and the law of an
    image is the law of its negative; a network linear in its input (a linear classifier on the
    pixels, or a convnet whose norm-act layers are ``x * weight + bias``, then global pooling
    and a linear head) has the same expected output for every class and stays at chance. The
    class lies in which band holds the most energy, so a network must square or rectify
    (ReLU-type units do) and compare energies across orientations (what normalization helps
    with), which a small convnet learns quickly on CPU.
    """
    rng = np.random.default_rng(int(data_seed))
    n, k = int(num_samples), int(num_classes)
    offset = rng.random()
    y = rng.permutation(np.arange(n) % k).astype(np.int64)  # balanced to within one sample
    other = (y + rng.integers(1, k, n)) % k
    coords = (np.arange(size, dtype=np.float64) - (size - 1) / 2) / size
    u, v = np.meshgrid(coords, coords, indexing="xy")  # (size, size); u across, v down

    def grating(cls: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
        theta = np.pi * (cls + offset + jitter * rng.uniform(-1, 1, n)) / k
        freq = rng.uniform(min_frequency, max_frequency, n)
        phase = rng.uniform(0, 2 * np.pi, n)
        arg = (
            2
            * np.pi
            * freq[:, None, None]
            * (u[None] * np.cos(theta)[:, None, None] + v[None] * np.sin(theta)[:, None, None])
            + phase[:, None, None]
        )
        return amplitude[:, None, None] * np.cos(arg)

    amplitude = rng.uniform(min_amplitude, 1.0, n)
    pattern = grating(y, amplitude)
    pattern += grating(other, distractor * amplitude * rng.uniform(0.5, 1.0, n))
    gains = rng.uniform(0.5, 1.5, (n, channels))
    x = gains[:, :, None, None] * pattern[:, None] + noise * rng.standard_normal(
        (n, channels, size, size)
    )
    return x.astype(np.float32), y


def _load_gratings(
    *, seed: int, num_train: int = 2000, num_val: int = 1000, **task: Any
) -> DeviceDataset:
    """Oriented gratings (:func:`make_gratings`): a class is the orientation of the strongest
    grating, every class's mean image is zero, so a network linear in its input stays at
    chance and the task rewards what a norm-act layer adds (rectification, normalization).

    ``data_seed`` draws the samples and the classes' orientations (a held-out variant is
    another ``data_seed``); ``seed`` picks which samples are validation. Values are
    standardized by the training set's mean and std (one scalar each).
    """
    # every bound a spec is checked against, also for a direct call; the task's options
    # (and their defaults) are make_gratings' own
    validate_dataset_options("gratings", {"num_train": num_train, "num_val": num_val, **task})
    task = {**_defaults(make_gratings), **task}
    total = int(num_train) + int(num_val)
    x, y = make_gratings(total, **task)
    tr, va = _split(total, int(num_val) / total, seed)
    tx, vx = _standardize(x[tr], x[va], (0, 1, 2, 3))
    return _tensors(
        "gratings",
        tx,
        y[tr],
        vx,
        y[va],
        num_classes=int(task["num_classes"]),
        input_shape=(int(task["channels"]), int(task["size"]), int(task["size"])),
        modality="image",
    )


def _check_gratings(options: dict[str, Any]) -> None:
    """The gratings options that bound each other (each one's own range is in
    :data:`DATASET_OPTIONS`): frequencies ordered and at most Nyquist (``size / 2`` cycles per
    image). Errors name the option."""
    given = {**_gratings_defaults(), **options}
    size = int(given["size"])
    low, high = float(given["min_frequency"]), float(given["max_frequency"])
    if low > high:
        raise InvalidConfigError(
            "dataset_options.min_frequency",
            f"must be <= max_frequency ({high:g}), got {low:g}",
        )
    if high > size / 2:
        raise InvalidConfigError(
            "dataset_options.max_frequency",
            f"must be <= size / 2 = {size / 2:g} cycles per image (Nyquist), got {high:g}",
        )


@dataclass(frozen=True)
class VisionSource:
    """Where one image dataset's files live and where they are downloaded from."""

    folder: str  # under the data root
    num_classes: int
    augment: str | None
    url: str  # the folder of the files below
    files: tuple[tuple[str, str], ...]  # (file name, md5) of each download
    layout: str  # "cifar10" | "cifar100" | "idx"


_VISION: dict[str, VisionSource] = {
    "cifar10": VisionSource(
        "cifar-10-batches-py",
        10,
        "crop_flip",
        "https://www.cs.toronto.edu/~kriz/",
        (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        "cifar10",
    ),
    "cifar100": VisionSource(
        "cifar-100-python",
        100,
        "crop_flip",
        "https://www.cs.toronto.edu/~kriz/",
        (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        "cifar100",
    ),
    "mnist": VisionSource(
        "mnist",
        10,
        None,
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        "idx",
    ),
    "fashion_mnist": VisionSource(
        "fashion_mnist",
        10,
        None,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        "idx",
    ),
}

# torchvision's folders for the same files, read too so that an existing download is reused
_TORCHVISION_FOLDERS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (MNIST's format; ``.gz`` read through gzip) as a NumPy array.

    The header is two zero bytes, a type code, the number of dimensions and each dimension
    as a big-endian int32; the data follow. A file whose header or size does not match
    raises :class:`DatasetUnavailableError` naming it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetUnavailableError(f"{path} is not an idx file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">i4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetUnavailableError(
            f"{path}: header says shape {shape} ({expected} bytes), the file holds "
            f"{len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only: a data file never runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 spells a bytes object written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset file")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data = _ArrayUnpickler(handle, encoding="bytes").load()
    if not isinstance(data, dict):
        raise DatasetUnavailableError(f"{path} does not hold a CIFAR batch (a dict)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def read_cifar(
    folder: str | os.PathLike, files: list[str], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels of CIFAR "python version" batches.

    Each batch is a pickled dict with ``data`` (N x 3072 bytes: the red, green, then blue
    plane of each 32x32 image, row by row) and ``labels`` (CIFAR-10) or ``fine_labels``
    (CIFAR-100); only dicts, lists and NumPy arrays are unpickled.
    """
    images, labels = [], []
    for name in files:
        path = Path(folder) / name
        batch = _unpickle(path)
        if "data" not in batch or label_key not in batch:
            raise DatasetUnavailableError(
                f"{path} is not a CIFAR batch: it lacks 'data' or {label_key!r}"
            )
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def vision_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``name``'s files under ``root`` (default the data root):

    ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``),
    ``cifar-100-python/`` (``train``, ``test``), ``mnist/`` and ``fashion_mnist/``
    (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``); for
    MNIST and Fashion-MNIST torchvision's ``MNIST/raw`` and ``FashionMNIST/raw`` are read too.
    """
    base = Path(root) if root is not None else default_data_root()
    source = _VISION[name]
    own = base / source.folder
    legacy = _TORCHVISION_FOLDERS.get(name)
    if legacy and not own.exists() and (base / legacy).exists():
        return base / legacy
    return own


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dataset(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download ``name``'s files into the data root with the standard library; returns the
    dataset's folder. Each file's MD5 is checked before it is unpacked or kept, and a file
    is written under a temporary name and renamed when complete, so an interrupted download
    leaves nothing that looks finished."""
    if name not in _VISION:
        raise UnknownNameError("downloadable dataset", name, _VISION)
    source = _VISION[name]
    base = Path(root) if root is not None else default_data_root()
    target = base / source.folder
    target.mkdir(parents=True, exist_ok=True)
    for filename, md5 in source.files:
        url = source.url + filename
        with tempfile.NamedTemporaryFile(dir=base, suffix=".part", delete=False) as part:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, part)
            except OSError as exc:
                Path(part.name).unlink(missing_ok=True)
                raise DatasetUnavailableError(
                    f"could not download {url} for dataset {name!r} ({exc}); put the files "
                    f"under {target} yourself (see layerforge.workers.datasets.vision_folder)"
                ) from exc
        partial = Path(part.name)
        got = _md5(partial)
        if got != md5:
            partial.unlink(missing_ok=True)
            raise DatasetUnavailableError(
                f"{url} has MD5 {got}, expected {md5}: the download is damaged; try again"
            )
        if filename.endswith(".tar.gz"):
            with tarfile.open(partial, "r:gz") as archive:
                archive.extractall(base, filter="data")
            partial.unlink()
        else:
            partial.replace(target / filename)
    return target


def _idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(folder / stem)


def _read_vision(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, C, H, W)`` uint8 and labels of the ``train`` or ``test`` split."""
    layout = _VISION[name].layout
    if layout == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return read_cifar(folder, files, "labels")
    if layout == "cifar100":
        return read_cifar(folder, [split], "fine_labels")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetUnavailableError(
            f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match"
        )
    return images[:, None, :, :], labels.astype(np.int64)


def _load_vision(
    name: str,
    *,
    seed: int,
    root: str | os.PathLike | None = None,
    download: bool = False,
    val_source: str = "holdout",
    val_fraction: float = 0.1,
    max_train: int | None = None,
    **options,
) -> DeviceDataset:
    _check_options(name, options, set())
    source = _VISION[name]
    if val_source not in ("holdout", "test"):
        raise InvalidConfigError(
            "dataset_options.val_source",
            f"must be 'holdout' or 'test', got {val_source!r}",
        )
    folder = vision_folder(name, root)
    try:
        x, y = _read_vision(name, folder, "train")
        test = _read_vision(name, folder, "test") if val_source == "test" else None
    except FileNotFoundError as exc:
        if not download:
            raise DatasetUnavailableError(
                f"dataset {name!r} not found: {exc.filename or exc} is missing. Put the files "
                f"under {folder} (root=..., or $LAYERFORGE_DATA_DIR) or pass download=True."
            ) from exc
        folder = download_dataset(name, root)
        x, y = _read_vision(name, folder, "train")
        test = _read_vision(name, folder, "test") if val_source == "test" else None
    if test is None:
        tr, va = _split(len(y), val_fraction, seed)
        tx, ty, vx, vy = x[tr], y[tr], x[va], y[va]
    else:
        tx, ty = x, y
        vx, vy = test
    if max_train is not None:
        tx, ty = tx[: int(max_train)], ty[: int(max_train)]
    tx, vx = _standardize(tx.astype(np.float32) / 255.0, vx.astype(np.float32) / 255.0, (0, 2, 3))
    return _tensors(
        name,
        tx,
        ty,
        vx,
        vy,
        num_classes=source.num_classes,
        input_shape=tuple(tx.shape[1:]),
        modality="image",
        augment=source.augment,
    )


def _vision_loader(name: str) -> Callable[..., DeviceDataset]:
    def load(**kw):
        return _load_vision(name, **kw)

    load.__name__ = f"_load_{name}"
    load.__doc__ = f"{name} read with NumPy from its files under the data root."
    return load


DATASETS: dict[str, Callable[..., DeviceDataset]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "synthetic": _load_synthetic,
    "gratings": _load_gratings,
    **{name: _vision_loader(name) for name in _VISION},
}

_NEEDS_ROOT = set(_VISION)


# --------------------------------------------------------------------------- option checks


@dataclass(frozen=True)
class DatasetOption:
    """One ``dataset_options`` key a dataset's loader takes: its type and bounds.

    ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"choice"`` (one of
    ``choices``); numbers lie in ``[minimum, maximum]`` (open at the ends marked open);
    ``why`` says what the upper bound protects. ``nullable`` lets the value be ``None``.
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    why: str = ""


_FRACTION = DatasetOption("float", 0.0, 1.0, open_min=True, open_max=True)
_VISION_OPTIONS = {
    "root": DatasetOption("str", maximum=4096, nullable=True, why="a path"),
    "download": DatasetOption("bool"),
    "val_source": DatasetOption("choice", choices=("holdout", "test")),
    "val_fraction": _FRACTION,
    "max_train": DatasetOption("int", 1, 10_000_000, nullable=True, why="training images"),
}

#: The options each dataset's loader takes (the keyword arguments of ``DATASETS[name]`` but
#: ``seed``, and for the file-backed datasets the ``root`` and ``download`` that
#: :class:`DatasetCache` passes on), with bounds that refuse what one worker cannot hold.
DATASET_OPTIONS: dict[str, dict[str, DatasetOption]] = {
    "digits": {"val_fraction": _FRACTION},
    "mnist1d": {
        "num_samples": DatasetOption(
            "int", 20, 1_000_000, why="each sample is generated in Python, one at a time"
        ),
        "as_sequence": DatasetOption("bool"),
        "val_fraction": _FRACTION,
    },
    "synthetic": {
        "modality": DatasetOption("choice", choices=("image", "sequence")),
        "num_classes": DatasetOption("int", 2, 1_000, why="classes"),
        "size": DatasetOption("int", 1, 512, why="an image is size x size pixels"),
        "channels": DatasetOption("int", 1, 256, why="channels of each sample"),
        "length": DatasetOption("int", 1, 65_536, why="values of each sequence"),
        "num_train": DatasetOption("int", 1, 1_000_000, why="samples generated in memory"),
        "num_val": DatasetOption("int", 1, 1_000_000, why="samples generated in memory"),
        "noise": DatasetOption("float", 0.0, 1e3, why="a noise std"),
        "distractor": DatasetOption("float", 0.0, 1e3, why="a distractor weight"),
        "max_shift": DatasetOption("int", 0, 512, why="a shift in pixels"),
        "data_seed": DatasetOption("int", 0, 2**32 - 1, why="a 32-bit seed"),
    },
    "gratings": {
        "num_classes": DatasetOption("int", 2, 1_000, why="classes (orientations)"),
        "size": DatasetOption("int", 4, 512, why="an image is size x size pixels"),
        "channels": DatasetOption("int", 1, 256, why="channels of each image"),
        "num_train": DatasetOption("int", 1, 1_000_000, why="samples generated in memory"),
        "num_val": DatasetOption("int", 1, 1_000_000, why="samples generated in memory"),
        "noise": DatasetOption("float", 0.0, 1e3, why="a noise std"),
        # the distractor grating must stay weaker than the class's, or a sample's class is
        # not defined
        "distractor": DatasetOption(
            "float", 0.0, 1.0, open_max=True, why="the class grating's amplitude"
        ),
        "min_amplitude": DatasetOption(
            "float", 0.0, 1.0, open_min=True, why="the largest amplitude"
        ),
        "min_frequency": DatasetOption("float", 0.0, 256.0, open_min=True, why="size / 2 at most"),
        "max_frequency": DatasetOption("float", 0.0, 256.0, open_min=True, why="size / 2 at most"),
        "jitter": DatasetOption("float", 0.0, 0.5, why="half the spacing between classes"),
        "data_seed": DatasetOption("int", 0, 2**32 - 1, why="a 32-bit seed"),
    },
    **{name: dict(_VISION_OPTIONS) for name in _VISION},
}

#: A synthetic dataset's samples and class prototypes together, in float32 values: 2**28
#: values are 1 GiB, and generating them holds a few copies.
MAX_SYNTHETIC_VALUES = 2**28


def _option_error(option: DatasetOption, value: Any) -> str | None:
    """What is wrong with ``value`` for ``option`` (a message), or None when it is valid."""
    if value is None:
        return None if option.nullable else "must not be null"
    if option.kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if option.kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if option.maximum is not None and len(value) > option.maximum:
            return f"must be at most {option.maximum:,.0f} characters ({option.why})"
        return None
    if option.kind == "choice":
        if value not in option.choices:
            return f"must be one of {', '.join(repr(c) for c in option.choices)}, got {value!r}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {value!r}"
    if option.kind == "int" and not isinstance(value, int):
        return f"must be an integer, got {value!r}"
    if not np.isfinite(value):
        return f"must be finite, got {value!r}"
    low, high = option.minimum, option.maximum
    if low is not None and (value <= low if option.open_min else value < low):
        return f"must be {'>' if option.open_min else '>='} {low:g}, got {value!r}"
    if high is not None and (value >= high if option.open_max else value > high):
        why = f" ({option.why})" if option.why else ""
        return f"must be {'<' if option.open_max else '<='} {high:,.10g}{why}, got {value!r}"
    return None


def validate_dataset_options(name: str, options: Any) -> None:
    """Check a proxy's ``dataset_options`` for dataset ``name`` without loading anything.

    Runs where a spec is submitted (in the API request), so that an unknown key or a size no
    worker could hold is refused before a campaign is stored, instead of failing every
    evaluation later. Raises :class:`UnknownNameError` for an unknown dataset and
    :class:`InvalidConfigError` naming ``dataset_options.KEY`` and the valid keys or the limit.
    Whether a file-backed dataset's files exist is not checked: they are read on the workers,
    which may not share this machine's disk.
    """
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, DATASETS)
    if not isinstance(options, dict):
        raise InvalidConfigError("dataset_options", "must be an object")
    allowed = DATASET_OPTIONS[name]
    for key, value in options.items():
        if key not in allowed:
            raise InvalidConfigError(
                f"dataset_options.{key}",
                f"unknown option for dataset {name!r}; valid options: {', '.join(sorted(allowed))}",
            )
        problem = _option_error(allowed[key], value)
        if problem is not None:
            raise InvalidConfigError(f"dataset_options.{key}", problem)
    if name == "synthetic":
        _check_synthetic_size(options)
    if name == "gratings":
        _check_gratings(options)
        _check_gratings_size(options)


def _check_synthetic_size(options: dict[str, Any]) -> None:
    """A synthetic dataset's values (samples and prototypes) must fit ``MAX_SYNTHETIC_VALUES``."""
    given = {**_defaults(_load_synthetic), **options}
    per_sample = int(given["channels"]) * (
        int(given["size"]) ** 2 if given["modality"] == "image" else int(given["length"])
    )
    rows = int(given["num_train"]) + int(given["num_val"]) + int(given["num_classes"])
    values = rows * per_sample
    if values > MAX_SYNTHETIC_VALUES:
        raise InvalidConfigError(
            "dataset_options",
            f"a synthetic dataset of (num_train + num_val + num_classes) x channels x "
            f"{'size^2' if given['modality'] == 'image' else 'length'} = {values:,} values is "
            f"over the limit of {MAX_SYNTHETIC_VALUES:,} (1 GiB of float32)",
        )


def _check_gratings_size(options: dict[str, Any]) -> None:
    """A gratings dataset's values must fit ``MAX_SYNTHETIC_VALUES`` (generation holds a few
    float64 copies of them)."""
    given = {**_gratings_defaults(), **options}
    values = (
        (int(given["num_train"]) + int(given["num_val"]))
        * int(given["channels"])
        * int(given["size"]) ** 2
    )
    if values > MAX_SYNTHETIC_VALUES:
        raise InvalidConfigError(
            "dataset_options",
            f"a gratings dataset of (num_train + num_val) x channels x size^2 = {values:,} "
            f"values is over the limit of {MAX_SYNTHETIC_VALUES:,} (1 GiB of float32)",
        )


def _defaults(loader: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a loader (or of a generator such as :func:`make_gratings`)."""
    return {
        key: param.default
        for key, param in inspect.signature(loader).parameters.items()
        if param.default is not inspect.Parameter.empty
    }


def _gratings_defaults() -> dict[str, Any]:
    """Every gratings option's default: the split's (the loader's) and the task's
    (:func:`make_gratings`)."""
    return {**_defaults(make_gratings), **_defaults(_load_gratings)}


# --------------------------------------------------------------------------- cache


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


class DatasetCache:
    """Loads each (dataset, options, seed, device) once and counts the loads per dataset."""

    def __init__(self) -> None:
        self._items: dict[Any, DeviceDataset] = {}
        self.loads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get(
        self,
        name: str,
        device: str | torch.device = "cpu",
        *,
        root: str | os.PathLike | None = None,
        download: bool = False,
        seed: int = 0,
        **options,
    ) -> DeviceDataset:
        if name not in DATASETS:
            raise UnknownNameError("dataset", name, DATASETS)
        device = torch.device(device)
        key = (
            name,
            str(device),
            int(seed),
            str(root) if root else None,
            _freeze(options),
        )
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                return hit
            kwargs = dict(options)
            if name in _NEEDS_ROOT:
                kwargs.update(root=root, download=download)
            ds = DATASETS[name](seed=int(seed), **kwargs)
            if ds.device != device:
                ds = ds.to(device)
            self._items[key] = ds
            self.loads[name] += 1
            return ds

    def load_counts(self) -> dict[str, int]:
        return dict(self.loads)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.loads.clear()


_DEFAULT_CACHE = DatasetCache()


def load_dataset(
    name: str,
    device: str | torch.device = "cpu",
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    cache: DatasetCache | None = None,
    **options,
) -> DeviceDataset:
    """Load ``name`` onto ``device`` (once per process; later calls return the cached copy).

    Raises :class:`UnknownNameError` (a ``ValueError``) naming the valid datasets,
    :class:`DatasetUnavailableError` when the files are missing (and not downloaded), and
    :class:`InvalidConfigError` for an unknown or bad option.
    """
    cache = cache if cache is not None else _DEFAULT_CACHE
    return cache.get(name, device, root=root, download=download, seed=seed, **options)


def load_counts() -> dict[str, int]:
    """How many times each dataset was loaded by this process's default cache."""
    return _DEFAULT_CACHE.load_counts()


def clear_cache() -> None:
    """Drop the default cache's datasets and counts."""
    _DEFAULT_CACHE.clear()
