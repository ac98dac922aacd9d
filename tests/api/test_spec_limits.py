"""Every bound of a campaign spec over the real API, on SQLite and PostgreSQL.

Each case is a limit: the spec just over it is a 422 whose message names the field and the
limit, and stores nothing; the spec exactly at it is accepted (202, one campaign more). The
``dataset_options`` of each dataset are checked at submit, without loading the dataset.
"""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Campaign, Candidate, Event
from layerforge.workers import datasets
from layerforge.workers.errors import InvalidConfigError
from tests.api.helpers import API, make_app
from tests.reliability.bad_specs import apply


def _synthetic(**options) -> dict:
    return {"arch": "mlp", "dataset": "synthetic", "steps": 30, "dataset_options": options}


def _proxy(**fields) -> dict:
    return {"arch": "mlp", "dataset": "digits", "steps": 30, **fields}


MNIST1D = {"arch": "mlp", "dataset": "mnist1d", "steps": 30}
SEED = "x * sigmoid(x)"
# (case, edits just over the limit, edits exactly at it, field named, limit named)
LIMITS = [
    ("population", {"strategy.population": 10_001}, {"strategy.population": 10_000},
     "body.strategy.population", "10000"),
    ("tournament", {"strategy.population": 10_000, "strategy.tournament": 10_001},
     {"strategy.population": 10_000, "strategy.tournament": 10_000},
     "body.strategy.tournament", "10000"),
    ("max-attempts", {"strategy.max_attempts": 10_001}, {"strategy.max_attempts": 10_000},
     "body.strategy.max_attempts", "10000"),
    ("parallelism", {"parallelism": 16_385}, {"parallelism": 16_384}, "body.parallelism",
     "16384"),
    ("max-candidates", {"budget.max_candidates": 1_000_001},
     {"budget.max_candidates": 1_000_000}, "body.budget.max_candidates", "1000000"),
    ("max-seconds", {"budget.max_seconds": 30 * 86400 + 1}, {"budget.max_seconds": 30 * 86400},
     "body.budget.max_seconds", "2592000"),
    ("seeds-count", {"seeds": [SEED] * 1001}, {"seeds": [SEED] * 1000}, "body.seeds", "1000"),
    ("proxies-count", {"proxies": [MNIST1D] * 33}, {"proxies": [MNIST1D] * 32},
     "body.proxies", "32"),
    ("proxy-steps", {"proxies": [_proxy(steps=1_000_001)]},
     {"proxies": [_proxy(steps=1_000_000)]}, "proxies[0].steps", "1,000,000"),
    ("proxy-steps-1e9", {"proxies": [_proxy(steps=10**9)]}, {"proxies": [_proxy(steps=10**6)]},
     "proxies[0].steps", "1,000,000"),
    ("proxy-batch", {"proxies": [_proxy(batch_size=65_537)]},
     {"proxies": [_proxy(batch_size=65_536)]}, "proxies[0].batch_size", "65,536"),
    ("proxy-batch-1e7", {"proxies": [_proxy(batch_size=10**7)]},
     {"proxies": [_proxy(batch_size=128)]}, "proxies[0].batch_size", "65,536"),
    ("proxy-eval-batch", {"proxies": [_proxy(eval_batch=65_537)]},
     {"proxies": [_proxy(eval_batch=65_536)]}, "proxies[0].eval_batch", "65,536"),
    ("proxy-divergence-check", {"proxies": [_proxy(divergence_check_every=1_000_001)]},
     {"proxies": [_proxy(divergence_check_every=1_000_000)]},
     "proxies[0].divergence_check_every", "1,000,000"),
    ("proxy-time-limit", {"proxies": [_proxy(time_limit_s=30 * 86400 + 1)]},
     {"proxies": [_proxy(time_limit_s=30 * 86400)]}, "proxies[0].time_limit_s", "2,592,000"),
    ("proxy-seed", {"proxies": [_proxy(seed=2**31)]}, {"proxies": [_proxy(seed=2**31 - 1)]},
     "proxies[0].seed", "2,147,483,647"),
    ("proxy-width", {"proxies": [_proxy(scale=64.5)]}, {"proxies": [_proxy(scale=64)]},
     "proxies[0].scale", "64"),
    ("transfer-proxies-count", {"transfer.proxies": [MNIST1D] * 33},
     {"transfer.proxies": [MNIST1D] * 32}, "body.transfer.proxies", "32"),
    ("transfer-proxy-steps", {"transfer.proxies": [_proxy(steps=1_000_001)]},
     {"transfer.proxies": [_proxy(steps=1_000_000)]}, "transfer.proxies[0].steps", "1,000,000"),
    ("transfer-seeds", {"transfer.seeds": 33}, {"transfer.seeds": 32}, "body.transfer.seeds",
     "32"),
    ("transfer-top-k", {"transfer.top_k": 1001}, {"transfer.top_k": 1000}, "body.transfer.top_k",
     "1000"),
    ("probe-batch", {"rejection.probe_batch": 4097}, {"rejection.probe_batch": 4096},
     "body.rejection.probe_batch", "4096"),
    ("probe-channels", {"rejection.probe_channels": 4097}, {"rejection.probe_channels": 4096},
     "body.rejection.probe_channels", "4096"),
    ("probe-size", {"rejection.probe_size": 1025}, {"rejection.probe_size": 1024},
     "body.rejection.probe_size", "1024"),
    ("probe-tensor",
     {"rejection.probe_batch": 4096, "rejection.probe_channels": 4096, "rejection.probe_size": 3},
     {"rejection.probe_batch": 4096, "rejection.probe_channels": 4096, "rejection.probe_size": 2},
     "probe_batch x probe_channels x probe_size^2", "134,217,728"),
    ("probe-scales", {"rejection.probe_scales": [1.0] * 17}, {"rejection.probe_scales": [1.0] * 16},
     "body.rejection.probe_scales", "16"),
    ("stability-steps", {"rejection.stability_steps": 10_001},
     {"rejection.stability_steps": 10_000}, "body.rejection.stability_steps", "10000"),
    ("stability-batch", {"rejection.stability_batch": 65_537},
     {"rejection.stability_batch": 65_536}, "body.rejection.stability_batch", "65536"),
    ("quality-steps", {"rejection.quality_steps": 1_000_001},
     {"rejection.quality_steps": 1_000_000}, "body.rejection.quality_steps", "1000000"),
    ("trainability-steps", {"rejection.trainability_steps": 1_000_001},
     {"rejection.trainability_steps": 1_000_000}, "body.rejection.trainability_steps", "1000000"),
    # dataset_options, per dataset
    ("synthetic-size", {"proxies": [_synthetic(size=513, num_train=100, num_val=50)]},
     {"proxies": [_synthetic(size=512, num_train=100, num_val=50)]},
     "proxies[0].dataset_options.size", "512"),
    ("synthetic-size-1e5", {"proxies": [_synthetic(size=10**5)]},
     {"proxies": [_synthetic(size=16)]}, "proxies[0].dataset_options.size", "512"),
    ("synthetic-samples", {"proxies": [_synthetic(num_train=1_000_001, size=1)]},
     {"proxies": [_synthetic(num_train=1_000_000, size=1)]},
     "proxies[0].dataset_options.num_train", "1,000,000"),
    ("synthetic-samples-1e9", {"proxies": [_synthetic(num_train=10**9)]},
     {"proxies": [_synthetic(num_train=2000)]}, "proxies[0].dataset_options.num_train",
     "1,000,000"),
    ("synthetic-values",
     {"proxies": [_synthetic(num_train=10**6, num_val=48_567, channels=1, size=16)]},
     {"proxies": [_synthetic(num_train=10**6, num_val=48_566, channels=1, size=16)]},
     "proxies[0].dataset_options: a synthetic dataset", "268,435,456"),
    ("synthetic-classes", {"proxies": [_synthetic(num_classes=1001)]},
     {"proxies": [_synthetic(num_classes=1000)]}, "proxies[0].dataset_options.num_classes",
     "1,000"),
    ("synthetic-channels", {"proxies": [_synthetic(channels=257, size=4)]},
     {"proxies": [_synthetic(channels=256, size=4)]}, "proxies[0].dataset_options.channels",
     "256"),
    ("synthetic-length", {"proxies": [_synthetic(modality="sequence", length=65_537)]},
     {"proxies": [_synthetic(modality="sequence", length=65_536, num_train=100, num_val=50)]},
     "proxies[0].dataset_options.length", "65,536"),
    ("synthetic-shift", {"proxies": [_synthetic(max_shift=513)]},
     {"proxies": [_synthetic(max_shift=512)]}, "proxies[0].dataset_options.max_shift", "512"),
    ("synthetic-data-seed", {"proxies": [_synthetic(data_seed=2**32)]},
     {"proxies": [_synthetic(data_seed=2**32 - 1)]}, "proxies[0].dataset_options.data_seed",
     "4,294,967,295"),
    ("synthetic-noise", {"proxies": [_synthetic(noise=1000.5)]},
     {"proxies": [_synthetic(noise=1000)]}, "proxies[0].dataset_options.noise", "1,000"),
    ("mnist1d-samples",
     {"proxies": [dict(MNIST1D, dataset_options={"num_samples": 1_000_001})]},
     {"proxies": [dict(MNIST1D, dataset_options={"num_samples": 1_000_000})]},
     "proxies[0].dataset_options.num_samples", "1,000,000"),
    ("digits-val-fraction", {"proxies": [_proxy(dataset_options={"val_fraction": 1.0})]},
     {"proxies": [_proxy(dataset_options={"val_fraction": 0.99})]},
     "proxies[0].dataset_options.val_fraction", "< 1"),
    ("cifar-max-train",
     {"proxies": [{"arch": "mlp", "dataset": "cifar10", "dataset_options": {"max_train": 10**7 + 1}}]},
     {"proxies": [{"arch": "mlp", "dataset": "cifar10", "dataset_options": {"max_train": 10**7}}]},
     "proxies[0].dataset_options.max_train", "10,000,000"),
    ("cifar-root-length",
     {"proxies": [{"arch": "mlp", "dataset": "cifar10", "dataset_options": {"root": "/" * 4097}}]},
     {"proxies": [{"arch": "mlp", "dataset": "cifar10", "dataset_options": {"root": "/" * 4096}}]},
     "proxies[0].dataset_options.root", "4,096"),
]  # fmt: skip

# (case, spec edits, text the message must hold): what no limit makes valid
DATASET_OPTION_ERRORS = [
    ("unknown-key", {"proxies": [_synthetic(samples=5)]},
     "proxies[0].dataset_options.samples: unknown option for dataset 'synthetic'; valid options: "
     "channels, data_seed, distractor, length, max_shift, modality, noise, num_classes, "
     "num_train, num_val, size"),
    ("unknown-key-digits", {"proxies": [_proxy(dataset_options={"root": "/data"})]},
     "proxies[0].dataset_options.root: unknown option for dataset 'digits'; valid options: "
     "val_fraction"),
    ("seed-is-not-an-option", {"proxies": [dict(MNIST1D, dataset_options={"seed": 3})]},
     "proxies[0].dataset_options.seed: unknown option for dataset 'mnist1d'"),
    ("size-a-float", {"proxies": [_synthetic(size=16.0)]},
     "proxies[0].dataset_options.size: must be an integer"),
    ("size-a-bool", {"proxies": [_synthetic(size=True)]},
     "proxies[0].dataset_options.size: must be a number"),
    ("modality-unknown", {"proxies": [_synthetic(modality="video")]},
     "proxies[0].dataset_options.modality: must be one of 'image', 'sequence'"),
    ("val-source-unknown",
     {"proxies": [{"arch": "mlp", "dataset": "mnist", "dataset_options": {"val_source": "x"}}]},
     "proxies[0].dataset_options.val_source: must be one of 'holdout', 'test'"),
    ("download-a-string",
     {"proxies": [{"arch": "mlp", "dataset": "mnist", "dataset_options": {"download": "yes"}}]},
     "proxies[0].dataset_options.download: must be true or false"),
    ("classes-one", {"proxies": [_synthetic(num_classes=1)]},
     "proxies[0].dataset_options.num_classes: must be >= 2"),
    ("transfer-unknown-key",
     {"transfer.proxies": [dict(MNIST1D, dataset_options={"size": 8})]},
     "transfer.proxies[0].dataset_options.size: unknown option for dataset 'mnist1d'"),
]  # fmt: skip


def _stored(url: str) -> tuple[int, int, int]:
    with session_scope(get_engine(url), readonly=True) as s:
        return s.query(Campaign).count(), s.query(Candidate).count(), s.query(Event).count()


def _post(client, edits: dict):
    return client.post(f"{API}/campaigns", json=apply(edits))


def test_every_limit_just_over_is_a_422_naming_field_and_limit_and_at_it_is_accepted(
    tmp_path, database_url
):
    app = make_app(tmp_path, database_url=database_url)
    loads_before = datasets.load_counts()
    with TestClient(app) as client:
        for case, over, at, field, limit in LIMITS:
            before = _stored(database_url)
            response = _post(client, over)
            assert response.status_code == 422, (case, response.status_code, response.text[:300])
            message = response.json()["error"]["message"]
            assert field in message and limit in message, (case, field, limit, message[:400])
            assert _stored(database_url) == before, case

            accepted = _post(client, at)
            assert accepted.status_code == 202, (case, accepted.text[:400])
            campaigns, _, _ = _stored(database_url)
            assert campaigns == before[0] + 1, case
    assert datasets.load_counts() == loads_before  # validating never loaded a dataset


@pytest.mark.parametrize(
    "case,edits,text", DATASET_OPTION_ERRORS, ids=[c[0] for c in DATASET_OPTION_ERRORS]
)
def test_bad_dataset_options_are_a_422_naming_the_option_and_store_nothing(
    tmp_path, database_url, case, edits, text
):
    app = make_app(tmp_path, database_url=database_url)
    with TestClient(app) as client:
        response = _post(client, edits)
        assert response.status_code == 422, response.text[:300]
        assert text in response.json()["error"]["message"], response.json()["error"]["message"]
        assert _stored(database_url) == (0, 0, 0)


def _keyword_options(name: str) -> dict[str, object]:
    """The keyword options a dataset's loader takes (with their defaults, or ``empty``):
    the gratings loader passes its task options to :func:`make_gratings`, whose they are."""
    loader = datasets._load_vision if name in datasets._NEEDS_ROOT else datasets.DATASETS[name]
    targets = [loader, datasets.make_gratings] if name == "gratings" else [loader]
    return {
        key: p.default
        for target in targets
        for key, p in inspect.signature(target).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and key != "seed"
    }


def test_the_option_table_matches_every_loader_signature():
    """The table the API checks against is the loaders' own keyword arguments: a new
    option a loader takes cannot be refused at submit, nor a removed one accepted."""
    for name in datasets.DATASETS:
        assert set(datasets.DATASET_OPTIONS[name]) == set(_keyword_options(name)), name


def test_every_default_option_is_within_its_own_limits():
    """The loaders' defaults pass their own checks (a spec that names them is valid)."""
    for name in datasets.DATASETS:
        defaults = {
            key: default
            for key, default in _keyword_options(name).items()
            if default is not inspect.Parameter.empty
        }
        datasets.validate_dataset_options(name, defaults)


def test_a_file_backed_dataset_is_not_read_at_submit(tmp_path):
    """A path that does not exist here is valid at submit: the workers read the files, on
    their own disks; the campaign fails when they cannot (tests/api/test_cannot_run.py)."""
    missing = tmp_path / "no-such-folder"
    datasets.validate_dataset_options("cifar10", {"root": str(missing), "download": False})
    assert not missing.exists()
    with pytest.raises(InvalidConfigError, match=r"dataset_options\.max_train: must be <= "):
        datasets.validate_dataset_options("cifar10", {"root": str(missing), "max_train": 10**8})
