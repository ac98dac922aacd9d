"""Datasets held as device tensors, with an on-device batch sampler and augmentation.

Every dataset is loaded once per process (per worker) into a :class:`DeviceDataset` whose
``train_x/train_y/val_x/val_y`` live on the target device; batches are index slices of an
on-device permutation, so the hot loop never touches a DataLoader or the host.

Built in:

- ``digits``: scikit-learn's 8x8 digits (1797 images, 10 classes), offline.
- ``mnist1d``: MNIST-1D generated offline with the ``mnist1d`` package (never its download
  path); a vector of 40 values, or a ``(1, 40)`` sequence with ``as_sequence=True``.
- ``synthetic``: generated images (``modality="image"``) or sequences
  (``modality="sequence"``) of chosen size and class count: shifted, rescaled class prototypes
  with a distractor prototype mixed in and noise; learnable, but not linearly trivial.
- ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``: through torchvision (the optional
  extra ``layerforge[vision]``) from a local folder (``root``, default
  ``$LAYERFORGE_DATA_DIR`` or ``~/.cache/layerforge/data``) or with ``download=True``.

The train/validation split is deterministic in ``seed``. For the torchvision datasets the
validation set is a held-out part of the official training set (``val_source="holdout"``,
as in the EvoNorm search; the official test set stays untouched for re-ranking) or the official
test set (``val_source="test"``).
"""

from __future__ import annotations

import os
import random
import threading
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
    "load_counts",
    "load_dataset",
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


def _load_digits(*, seed: int, val_fraction: float = 0.2, **options) -> DeviceDataset:
    _check_options("digits", options, set())
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :] / 16.0  # (1797, 1, 8, 8)
    y = d.target.astype(np.int64)
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


def _load_mnist1d(
    *,
    seed: int,
    num_samples: int = 5000,
    as_sequence: bool = False,
    val_fraction: float = 0.2,
    **options,
) -> DeviceDataset:
    """MNIST-1D generated offline (``mnist1d.data.make_dataset``; never downloads).

    The generator reseeds numpy's and Python's global RNGs; their states are restored after.
    ``seed`` picks the train/validation split; the samples themselves use mnist1d's seed 42,
    so every worker sees the same data.
    """
    _check_options("mnist1d", options, set())
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - mnist1d is a dependency
        raise DatasetUnavailableError(f"mnist1d needs the mnist1d package: {exc}") from exc
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
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


_VISION = {
    # name: (torchvision class, classes, channels, folder hint, augmentation)
    "cifar10": ("CIFAR10", 10, "cifar-10-batches-py", "crop_flip"),
    "cifar100": ("CIFAR100", 100, "cifar-100-python", "crop_flip"),
    "mnist": ("MNIST", 10, "MNIST/raw", None),
    "fashion_mnist": ("FashionMNIST", 10, "FashionMNIST/raw", None),
}


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
    cls_name, num_classes, folder, augment = _VISION[name]
    root_path = Path(root) if root is not None else default_data_root()
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets as tvd
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"dataset {name!r} needs torchvision, an optional extra: "
            f"pip install 'layerforge[vision]'. Then either put the files under "
            f"{root_path / folder} (root=..., or $LAYERFORGE_DATA_DIR) or pass download=True. "
            f"Offline datasets that need nothing extra: digits, mnist1d, synthetic."
        ) from exc
    if val_source not in ("holdout", "test"):
        raise InvalidConfigError(
            "dataset_options.val_source",
            f"must be 'holdout' or 'test', got {val_source!r}",
        )
    cls = getattr(tvd, cls_name)
    try:
        train = cls(str(root_path), train=True, download=download)
        test = cls(str(root_path), train=False, download=download) if val_source == "test" else None
    except (RuntimeError, OSError) as exc:
        raise DatasetUnavailableError(
            f"dataset {name!r} not found under {root_path} ({exc}). Put the torchvision files "
            f"under {root_path / folder} (root=..., or $LAYERFORGE_DATA_DIR) or pass download=True."
        ) from exc

    def arrays(ds):
        data = np.asarray(ds.data)
        if data.ndim == 3:  # MNIST-like (N, H, W) uint8
            data = data[:, None, :, :]
        else:  # CIFAR (N, H, W, C)
            data = data.transpose(0, 3, 1, 2)
        return data.astype(np.float32) / 255.0, np.asarray(ds.targets, dtype=np.int64)

    x, y = arrays(train)
    if test is None:
        tr, va = _split(len(y), val_fraction, seed)
        tx, ty, vx, vy = x[tr], y[tr], x[va], y[va]
    else:
        tx, ty = x, y
        vx, vy = arrays(test)
    if max_train is not None:
        tx, ty = tx[: int(max_train)], ty[: int(max_train)]
    tx, vx = _standardize(tx, vx, (0, 2, 3))
    return _tensors(
        name,
        tx,
        ty,
        vx,
        vy,
        num_classes=num_classes,
        input_shape=tuple(tx.shape[1:]),
        modality="image",
        augment=augment,
    )


def _vision_loader(name: str) -> Callable[..., DeviceDataset]:
    def load(**kw):
        return _load_vision(name, **kw)

    load.__name__ = f"_load_{name}"
    load.__doc__ = f"{name} through torchvision (optional extra ``layerforge[vision]``)."
    return load


DATASETS: dict[str, Callable[..., DeviceDataset]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "synthetic": _load_synthetic,
    **{name: _vision_loader(name) for name in _VISION},
}

_NEEDS_ROOT = set(_VISION)


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


def default_cache() -> DatasetCache:
    """The per-process cache that :func:`load_dataset` uses."""
    return _DEFAULT_CACHE


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
    :class:`DatasetUnavailableError` when torchvision or the files are missing, and
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
