"""Service settings from ``LAYERFORGE_*`` environment variables; bad values fail at start.

Every setting is read once, validated, and reported with the variable's name when wrong,
before anything (a database file, a Ray cluster) is created.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from layerforge.storage import DEFAULT_DATABASE_URL, StorageError, validate_database_url


class SettingsError(RuntimeError):
    """A ``LAYERFORGE_*`` variable holds a value the service cannot start with."""


class Settings(BaseSettings):
    """Configuration of the service, the controller and the CLI."""

    model_config = SettingsConfigDict(env_prefix="LAYERFORGE_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the database")
    api_token: str | None = Field(None, description="bearer token required by mutating calls")
    host: str = Field("127.0.0.1", description="address the HTTP server binds")
    port: int = Field(8000, ge=1, le=65535, description="port the HTTP server binds")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="request bodies above get 413")
    data_dir: str | None = Field(
        None,
        description="folder of the CIFAR / MNIST files; unset: ~/.cache/layerforge/data "
        "(each worker reads LAYERFORGE_DATA_DIR itself, see workers.datasets.default_data_root)",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="log every campaign and its completed candidates to this MLflow tracking "
        "URI (needs pip install 'layerforge[mlflow]')",
    )
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda' for evaluations")
    workers: int = Field(2, ge=1, description="Ray evaluator actors the controller starts")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs reserved per evaluator actor")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per actor; fractions pack a GPU")
    task_timeout_s: float = Field(1800.0, gt=0, description="an evaluation over this times out")
    run_controller: bool = Field(True, description="run campaigns inside the API service")
    evaluator: Literal["ray", "local", "simulated"] = Field(
        "ray", description="ray (local Ray or RAY_ADDRESS), local (in-process) or simulated"
    )
    max_campaigns: int = Field(2, ge=1, description="campaigns the controller runs at once")
    simulated_seconds: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="with the simulated evaluator: seconds each evaluation takes (0: none)",
    )
    ray_address: str | None = Field(
        default_factory=lambda: os.environ.get("RAY_ADDRESS") or None,
        description="Ray cluster to join (RAY_ADDRESS); unset starts a local Ray",
    )
    ray_auth_token: str | None = Field(
        default_factory=lambda: os.environ.get("RAY_AUTH_TOKEN"),
        repr=False,
        description="token of a Ray cluster with token authentication (RAY_AUTH_TOKEN, shared "
        "by every node and client of the cluster); given one, Ray is joined in token mode",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            validate_database_url(value)
        except StorageError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("api_token")
    @classmethod
    def _check_api_token(cls, value: str | None) -> str | None:
        # An empty token would switch authentication off without a word; whitespace at the
        # ends or a control character could never match the header a client sends.
        if value is None:
            return value
        if not value.strip():
            raise ValueError(
                "LAYERFORGE_API_TOKEN is empty or only whitespace: set a real token or unset it"
            )
        if value != value.strip():
            raise ValueError("LAYERFORGE_API_TOKEN starts or ends with whitespace")
        bad = next((c for c in value if not (c.isascii() and c.isprintable())), None)
        if bad is not None:
            raise ValueError(
                f"LAYERFORGE_API_TOKEN holds {bad!r}: a token must be printable ASCII "
                "(it travels in an HTTP header)"
            )
        return value

    @field_validator("ray_auth_token")
    @classmethod
    def _check_ray_auth_token(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from layerforge.workers.ray_session import check_auth_token

        variable = (
            "LAYERFORGE_RAY_AUTH_TOKEN"
            if "LAYERFORGE_RAY_AUTH_TOKEN" in os.environ
            else "RAY_AUTH_TOKEN"
        )
        return check_auth_token(value, variable)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("LAYERFORGE_DEVICE must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise :class:`SettingsError` naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # the overrides are field values, validated by pydantic at run time
    except ValidationError as err:
        problems = []
        for item in err.errors():
            name = "LAYERFORGE_" + "_".join(str(p) for p in item["loc"]).upper()
            message = item["msg"].removeprefix("Value error, ")
            named = "LAYERFORGE_" in message or message.startswith("RAY_")  # names its variable
            problems.append(message if named else f"{name}: {message}")
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
