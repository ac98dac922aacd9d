import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import struct
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from layerforge.workers import datasets
from layerforge.workers.datasets import (
    DATASETS,
    BatchSampler,
    DatasetCache,
    augment_batch,
    default_data_root,
    download_dataset,
    load_dataset,
    make_gratings,
    make_mnist1d,
    read_idx,
    vision_folder,
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


def test_digits_are_scikit_learns_without_importing_sklearn_datasets():
    """The loader reads scikit-learn's own digits file: the same images and labels as
    ``load_digits``, and a fresh process that loads them never imports ``sklearn.datasets``."""
    import subprocess

    from sklearn.datasets import load_digits

    images, targets = datasets.digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images)
    assert np.array_equal(targets, reference.target)
    probe = (
        "import sys; from layerforge.workers.datasets import load_dataset, DatasetCache; "
        "load_dataset('digits', cache=DatasetCache()); print('sklearn.datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_split_is_deterministic_and_seeded():
    a = load_dataset("digits", cache=DatasetCache(), seed=3)
    b = load_dataset("digits", cache=DatasetCache(), seed=3)
    c = load_dataset("digits", cache=DatasetCache(), seed=4)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.val_x, c.val_x)


def test_mnist1d_generated_here_without_the_package(cache, monkeypatch):
    """The loader needs neither the mnist1d package nor a download, and leaves the global
    random states alone."""
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # import mnist1d now fails
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    ds = load_dataset("mnist1d", cache=cache)
    assert ds.input_shape == (40,) and ds.modality == "vector" and ds.num_classes == 10
    assert ds.num_train == 4000 and ds.num_val == 1000
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == np_state).all()
    assert sorted(np.bincount(ds.train_y.numpy(), minlength=10).nonzero()[0]) == list(range(10))
    seq = load_dataset("mnist1d", cache=cache, as_sequence=True)
    assert seq.input_shape == (1, 40) and seq.modality == "sequence"
    assert torch.equal(seq.train_x[:, 0], ds.train_x)


def test_mnist1d_is_the_packages_own_data():
    """Sample for sample what mnist1d's make_dataset generates (where the package imports)."""
    mnist1d_data = pytest.importorskip("mnist1d.data", reason="the mnist1d package compares")
    args = mnist1d_data.get_dataset_args()
    args.num_samples = 1000
    state = np.random.get_state()
    try:
        theirs = mnist1d_data.make_dataset(args)
    finally:
        np.random.set_state(state)
    ours_x, ours_y = make_mnist1d(1000)
    np.testing.assert_array_equal(ours_y, np.concatenate([theirs["y"], theirs["y_test"]]))
    np.testing.assert_allclose(
        ours_x, np.concatenate([theirs["x"], theirs["x_test"]]), rtol=0, atol=1e-12
    )


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


def test_gratings_shapes_determinism_and_balance(cache):
    ds = load_dataset(
        "gratings", cache=cache, num_classes=5, size=12, channels=2, num_train=300, num_val=100
    )
    assert ds.input_shape == (2, 12, 12) and ds.num_classes == 5 and ds.modality == "image"
    assert ds.train_x.shape == (300, 2, 12, 12) and ds.val_x.shape == (100, 2, 12, 12)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.long
    # every class equally often (to within one sample) over the generated pool
    counts = torch.bincount(torch.cat([ds.train_y, ds.val_y]), minlength=5)
    assert counts.tolist() == [80] * 5
    # deterministic in data_seed; the split seed only moves samples between train and val
    x, y = make_gratings(400, num_classes=5, size=12, channels=2)
    again, y2 = make_gratings(400, num_classes=5, size=12, channels=2)
    np.testing.assert_array_equal(x, again) and np.testing.assert_array_equal(y, y2)
    other, _ = make_gratings(400, num_classes=5, size=12, channels=2, data_seed=7)
    assert not np.allclose(x, other)
    split = load_dataset(
        "gratings",
        cache=DatasetCache(),
        seed=1,
        num_classes=5,
        size=12,
        channels=2,
        num_train=300,
        num_val=100,
    )
    assert sorted(torch.cat([ds.train_y, ds.val_y]).tolist()) == sorted(
        torch.cat([split.train_y, split.val_y]).tolist()
    )
    assert not torch.equal(ds.val_x, split.val_x)


def test_gratings_mean_image_is_zero_for_every_class():
    """The phase is uniform: a class's mean image is zero up to sampling noise, so nothing
    linear in the input tells the classes apart."""
    x, y = make_gratings(8000, num_classes=4, size=8, noise=0.0)
    scale = x.std()
    for k in range(4):
        mean = x[y == k].mean(axis=0)
        assert np.abs(mean).max() < 0.1 * scale, (k, np.abs(mean).max() / scale)


@pytest.fixture
def one_torch_thread():
    """One torch thread (as an evaluator actor runs): many threads on a loaded machine make
    the small training loops below 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_gratings_defeat_a_linear_model_but_not_a_tiny_relu_convnet(cache):
    from torch import nn

    ds = load_dataset("gratings", cache=cache, num_classes=4, num_train=1000, num_val=500)

    def fit(net: nn.Module) -> float:
        torch.manual_seed(0)
        batches = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(200):
            i = torch.randint(0, ds.num_train, (64,), generator=batches)
            loss = nn.functional.cross_entropy(net(ds.train_x[i]), ds.train_y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return (net(ds.val_x).argmax(1) == ds.val_y).float().mean().item()

    with torch.random.fork_rng():
        linear = fit(nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 4)))
        convnet = fit(
            nn.Sequential(
                nn.Conv2d(1, 8, 5, padding=2),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, 4),
            )
        )
    assert linear < 0.35, linear  # chance is 0.25
    assert convnet > 0.8, convnet


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"distractor": 1.0}, "dataset_options.distractor"),
        ({"min_frequency": 5.0, "max_frequency": 4.0}, "dataset_options.min_frequency"),
        ({"size": 6, "max_frequency": 4.0}, "dataset_options.max_frequency"),
        ({"num_classes": 1}, "dataset_options.num_classes"),
        ({"jitter": 0.7}, "dataset_options.jitter"),
        ({"num_train": 10**6, "size": 512}, "dataset_options"),
        ({"colour": 3}, "dataset_options.colour"),
    ],
)
def test_gratings_options_are_checked_naming_the_option(cache, options, field):
    with pytest.raises(InvalidConfigError) as err:
        datasets.validate_dataset_options("gratings", options)
    assert err.value.field == field, str(err.value)
    with pytest.raises(InvalidConfigError) as err:
        load_dataset("gratings", cache=cache, **options)
    assert err.value.field == field, str(err.value)


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


# ------------------------------------------------------------------ image datasets, real formats


def _write_idx(path, array: np.ndarray) -> None:
    """An idx file as MNIST ships it: magic (0, 0, type 0x08, ndim), big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "i" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_images(n: int, shape: tuple[int, ...], classes: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n)


def _write_mnist(folder, n_train=60, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train = _fake_images(n_train, (28, 28), 10, 1)
    test = _fake_images(n_test, (28, 28), 10, 2)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return train, test


def _write_cifar_batch(path, images, labels, label_key: bytes):
    # The real batches are dicts with bytes keys (pickled by Python 2) holding a uint8 array
    # (N, 3072) of red, green, blue planes and a list of labels.
    batch = {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [b"img%d.png" % i for i in range(len(images))],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def _write_cifar10(folder, per_batch=8, n_test=10):
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for i in range(1, 6):
        images, labels = _fake_images(per_batch, (3, 32, 32), 10, 10 + i)
        _write_cifar_batch(folder / f"data_batch_{i}", images, labels, b"labels")
        train.append((images, labels))
    images, labels = _fake_images(n_test, (3, 32, 32), 10, 99)
    _write_cifar_batch(folder / "test_batch", images, labels, b"labels")
    x = np.concatenate([t[0] for t in train])
    y = np.concatenate([t[1] for t in train])
    return (x, y), (images, labels)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_datasets_read_with_numpy(tmp_path, name, gz):
    (train_x, train_y), (test_x, test_y) = _write_mnist(tmp_path / name, gz=gz)
    ds = load_dataset(name, cache=DatasetCache(), root=tmp_path, val_source="test")
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.augment is None
    assert ds.num_train == 60 and ds.num_val == 20
    assert ds.train_y.tolist() == train_y.tolist() and ds.val_y.tolist() == test_y.tolist()
    # standardized pixels keep the order of the raw ones
    raw = train_x[:, None].astype(np.float32) / 255.0
    back = ds.train_x.numpy() * raw.std() + raw.mean()
    np.testing.assert_allclose(back, raw, atol=1e-4)
    held = load_dataset(name, cache=DatasetCache(), root=tmp_path, val_fraction=0.25)
    assert held.num_train == 45 and held.num_val == 15  # held out of the training set


def test_torchvision_folder_is_read_too(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    ds = load_dataset("mnist", cache=DatasetCache(), root=tmp_path)
    assert ds.num_train + ds.num_val == 60


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERFORGE_DATA_DIR", str(tmp_path))
    assert default_data_root() == tmp_path
    _write_mnist(tmp_path / "fashion_mnist")
    ds = load_dataset("fashion_mnist", cache=DatasetCache())
    assert ds.num_train + ds.num_val == 60
    monkeypatch.delenv("LAYERFORGE_DATA_DIR")
    assert default_data_root() == Path.home() / ".cache" / "layerforge" / "data"


def test_cifar10_pickle_batches(tmp_path):
    (train_x, train_y), (test_x, test_y) = _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", cache=DatasetCache(), root=tmp_path, val_source="test")
    assert ds.input_shape == (3, 32, 32) and ds.augment == "crop_flip" and ds.num_classes == 10
    assert ds.num_train == 40 and ds.train_y.tolist() == train_y.tolist()
    assert ds.val_y.tolist() == test_y.tolist()
    # channel planes land where CIFAR puts them: red plane first
    raw = train_x.astype(np.float32) / 255.0
    mean = raw.mean(axis=(0, 2, 3), keepdims=True)
    std = raw.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    np.testing.assert_allclose(ds.train_x.numpy(), (raw - mean) / std, atol=1e-4)


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _fake_images(30, (3, 32, 32), 100, 5)
    test = _fake_images(10, (3, 32, 32), 100, 6)
    _write_cifar_batch(folder / "train", *train, b"fine_labels")
    _write_cifar_batch(folder / "test", *test, b"fine_labels")
    ds = load_dataset("cifar100", cache=DatasetCache(), root=tmp_path, val_source="test")
    assert ds.num_classes == 100 and ds.train_y.tolist() == train[1].tolist()


def test_cifar_file_that_runs_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_dataset("cifar10", cache=DatasetCache(), root=tmp_path)


def test_damaged_idx_file_is_named(tmp_path):
    _write_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetUnavailableError, match="train-images-idx3-ubyte"):
        read_idx(path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist"])
def test_missing_files_say_where_to_put_them(cache, tmp_path, name):
    with pytest.raises(DatasetUnavailableError) as exc:
        load_dataset(name, cache=cache, root=tmp_path)
    message = str(exc.value)
    assert str(vision_folder(name, tmp_path)) in message and "download=True" in message


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path / "served"``."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _md5_of(path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_download_mnist_over_http(file_server, tmp_path, monkeypatch):
    served, url = file_server
    _write_mnist(served, gz=True)
    files = tuple(
        (n, _md5_of(served / n))
        for n in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    )
    # the remote host is the one thing replaced: the table points at the local server
    monkeypatch.setitem(
        datasets._VISION,
        "mnist",
        dataclasses.replace(datasets._VISION["mnist"], url=url, files=files),
    )
    root = tmp_path / "data"
    ds = load_dataset("mnist", cache=DatasetCache(), root=root, download=True, val_source="test")
    assert ds.num_train == 60 and ds.num_val == 20
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(n for n, _ in files)
    assert not list(root.glob("*.part"))


def test_download_cifar10_archive_over_http(file_server, tmp_path, monkeypatch):
    served, url = file_server
    _write_cifar10(tmp_path / "build" / "cifar-10-batches-py")
    with tarfile.open(served / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    files = (("cifar-10-python.tar.gz", _md5_of(served / "cifar-10-python.tar.gz")),)
    monkeypatch.setitem(
        datasets._VISION,
        "cifar10",
        dataclasses.replace(datasets._VISION["cifar10"], url=url, files=files),
    )
    root = tmp_path / "data"
    ds = load_dataset("cifar10", cache=DatasetCache(), root=root, download=True)
    assert ds.num_train + ds.num_val == 40
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert not (root / "cifar-10-python.tar.gz").exists() and not list(root.glob("*.part"))


def test_damaged_download_is_refused_and_not_kept(file_server, tmp_path, monkeypatch):
    served, url = file_server
    _write_mnist(served, gz=True)
    files = (("train-images-idx3-ubyte.gz", "0" * 32),)
    monkeypatch.setitem(
        datasets._VISION,
        "mnist",
        dataclasses.replace(datasets._VISION["mnist"], url=url, files=files),
    )
    root = tmp_path / "data"
    with pytest.raises(DatasetUnavailableError, match="MD5"):
        download_dataset("mnist", root)
    assert not list((root / "mnist").iterdir()) and not list(root.glob("*.part"))


def test_download_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(
        datasets._VISION,
        "mnist",
        dataclasses.replace(datasets._VISION["mnist"], url="http://127.0.0.1:9/"),
    )
    with pytest.raises(DatasetUnavailableError, match="could not download") as exc:
        load_dataset("mnist", cache=DatasetCache(), root=tmp_path, download=True)
    assert str(tmp_path / "mnist") in str(exc.value)


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
