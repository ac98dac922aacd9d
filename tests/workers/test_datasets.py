import builtins
import sys

import pytest
import torch

from layerforge.workers.datasets import (
    DATASETS,
    BatchSampler,
    DatasetCache,
    augment_batch,
    load_dataset,
)
from layerforge.workers.errors import DatasetUnavailableError, InvalidConfigError, UnknownNameError


@pytest.fixture
def cache():
    return DatasetCache()


def test_digits_shapes_and_split(cache):
    ds = load_dataset("digits", cache=cache)
    assert ds.input_shape == (1, 8, 8) and ds.modality == "image" and ds.num_classes == 10
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.train_x.dtype == torch.float32
    assert ds.num_train + ds.num_val == 1797
    assert abs(ds.train_x.mean().item()) < 1e-3 and abs(ds.train_x.std().item() - 1) < 1e-2
    assert set(ds.train_y.unique().tolist()) == set(range(10))


def test_split_is_deterministic_and_seeded():
    a = load_dataset("digits", cache=DatasetCache(), seed=3)
    b = load_dataset("digits", cache=DatasetCache(), seed=3)
    c = load_dataset("digits", cache=DatasetCache(), seed=4)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.val_x, c.val_x)


def test_mnist1d_generated_offline(cache, monkeypatch):
    import mnist1d.data

    def no_download(*a, **k):
        raise AssertionError("mnist1d must be generated, never downloaded")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    state = torch.random.get_rng_state()
    import numpy as np

    np_state = np.random.get_state()[1].copy()
    ds = load_dataset("mnist1d", cache=cache)
    assert ds.input_shape == (40,) and ds.modality == "vector" and ds.num_classes == 10
    assert ds.num_train == 4000 and ds.num_val == 1000
    assert torch.equal(torch.random.get_rng_state(), state)
    assert (np.random.get_state()[1] == np_state).all()  # global numpy RNG restored
    seq = load_dataset("mnist1d", cache=cache, as_sequence=True)
    assert seq.input_shape == (1, 40) and seq.modality == "sequence"
    assert torch.equal(seq.train_x[:, 0], ds.train_x)


def test_synthetic_images_and_sequences(cache):
    img = load_dataset(
        "synthetic",
        cache=cache,
        size=12,
        channels=2,
        num_classes=5,
        num_train=300,
        num_val=100,
    )
    assert img.input_shape == (2, 12, 12) and img.num_classes == 5 and img.num_train == 300
    seq = load_dataset(
        "synthetic",
        cache=cache,
        modality="sequence",
        length=20,
        channels=3,
        num_classes=4,
        num_train=200,
        num_val=50,
    )
    assert seq.input_shape == (3, 20) and seq.modality == "sequence" and seq.num_val == 50
    assert set(seq.train_y.unique().tolist()) <= set(range(4))


def test_synthetic_is_not_linearly_trivial(cache):
    from sklearn.linear_model import LogisticRegression

    ds = load_dataset("synthetic", cache=cache, size=8, num_train=1000, num_val=400)
    clf = LogisticRegression(max_iter=300).fit(ds.train_x.flatten(1).numpy(), ds.train_y.numpy())
    acc = clf.score(ds.val_x.flatten(1).numpy(), ds.val_y.numpy())
    assert 0.15 < acc < 0.97, acc  # learnable, but not solved by a linear model


def test_cache_loads_once_and_counts(cache):
    a = load_dataset("digits", cache=cache)
    b = load_dataset("digits", cache=cache)
    assert a is b and cache.load_counts() == {"digits": 1}
    load_dataset("digits", cache=cache, seed=1)
    assert cache.load_counts() == {"digits": 2}


def test_unknown_dataset_names_valid_ones(cache):
    with pytest.raises(UnknownNameError) as exc:
        load_dataset("imagenet", cache=cache)
    assert isinstance(exc.value, ValueError)
    for name in DATASETS:
        assert name in str(exc.value)


def test_unknown_option_is_named(cache):
    with pytest.raises(InvalidConfigError, match="colour"):
        load_dataset("digits", cache=cache, colour=True)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist"])
def test_torchvision_datasets_say_how_to_get_them(cache, monkeypatch, tmp_path, name):
    real_import = builtins.__import__

    def fake_import(mod, *a, **k):
        if mod == "torchvision" or mod.startswith("torchvision."):
            raise ImportError("No module named 'torchvision'")
        return real_import(mod, *a, **k)

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DatasetUnavailableError) as exc:
        load_dataset(name, cache=cache, root=tmp_path)
    msg = str(exc.value)
    assert "pip install 'layerforge[vision]'" in msg
    assert str(tmp_path) in msg and "download=True" in msg


def test_batch_sampler_covers_epoch_without_repeats(cache):
    ds = load_dataset("synthetic", cache=cache, num_train=100, num_val=20, size=4)
    s = BatchSampler(ds, 25, seed=0)
    ys = torch.cat([s.next()[1] for _ in range(4)])
    assert ys.shape == (100,) and s.epoch == 0
    assert sorted(ys.tolist()) == sorted(ds.train_y.tolist())
    s.next()
    assert s.epoch == 1


def test_batch_sampler_is_reproducible(cache):
    ds = load_dataset("digits", cache=cache)
    a = BatchSampler(ds, 32, seed=5).next()[0]
    b = BatchSampler(ds, 32, seed=5).next()[0]
    assert torch.equal(a, b)


def test_crop_flip_augmentation_on_device():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    outs = [augment_batch(x, "crop_flip", 2, g) for _ in range(20)]
    assert all(o.shape == x.shape for o in outs)
    assert any(not torch.equal(o, x) for o in outs)
    # every output value is either padding (0) or a value of the same image and channel
    for o in outs:
        for i in range(2):
            for c in range(3):
                vals = set(o[i, c].flatten().tolist()) - {0.0}
                assert vals <= set(x[i, c].flatten().tolist())
    assert torch.equal(augment_batch(x, None, 2, g), x)
