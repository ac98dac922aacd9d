"""docker-compose.yml and Dockerfile, checked without Docker: every service's command exists
in the image, and the api gets the environment it needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from layerforge.storage import validate_database_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent


def substitute(value: str) -> str:
    """Apply compose's ${VAR:-default} / ${VAR:?error} with no variables set."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "set-by-operator", value)


def test_services_and_their_wiring():
    assert {"postgres", "ray-head", "ray-worker", "controller", "api"} <= set(SERVICES)
    postgres = SERVICES["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    for name in ("api", "controller"):
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = SERVICES["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "container_name" not in SERVICES["ray-worker"]  # --scale ray-worker=N works
    for name in ("ray-head", "ray-worker", "controller", "api"):
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == "layerforge:latest"


def _settings_of(service: str):
    import os

    from layerforge.api.settings import load_settings

    env = {k: substitute(str(v)) for k, v in SERVICES[service]["environment"].items()}
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return env, load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_api_and_controller_environment():
    """The api serves HTTP and runs no campaigns; the controller runs them on Ray."""
    api_env, api = _settings_of("api")
    controller_env, controller = _settings_of("controller")
    for env in (api_env, controller_env):
        url = env["LAYERFORGE_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
        validate_database_url(url)
    assert api_env["LAYERFORGE_DATABASE_URL"] == controller_env["LAYERFORGE_DATABASE_URL"]
    assert api_env["LAYERFORGE_API_TOKEN"]  # the api listens on 0.0.0.0 inside the network
    assert api.run_controller is False
    assert controller.ray_address == "ray-head:6379" and controller.evaluator == "ray"
    assert controller.run_controller is True
    command = SERVICES["api"]["command"]
    assert command[:2] == ["layerforge", "serve"] and "0.0.0.0" in command
    assert SERVICES["controller"]["command"] == ["layerforge", "controller"]


def test_every_ray_container_shares_one_token_from_the_operator():
    """Ray 2.60's head requires a token: the head, the workers and the controller (a Ray
    client) all take the one RAY_AUTH_TOKEN of the compose environment, in token mode, and
    compose refuses to start without it; the image carries none."""
    raw = (ROOT / "docker-compose.yml").read_text()
    references = set(re.findall(r"\$\{RAY_AUTH_TOKEN(:[?-][^}]*)?\}", raw))
    assert len(references) == 1 and next(iter(references)).startswith(":?"), references
    for name in ("ray-head", "ray-worker", "controller"):
        env = SERVICES[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
    # the api runs no campaigns, so it never connects to Ray and holds no Ray token
    assert "RAY_AUTH_TOKEN" not in SERVICES["api"]["environment"]
    api_env, api = _settings_of("api")
    assert api.run_controller is False
    controller_env, controller = _settings_of("controller")
    assert controller.ray_auth_token == controller_env["RAY_AUTH_TOKEN"] == "set-by-operator"
    assert "RAY_AUTH" not in (ROOT / "Dockerfile").read_text()


def test_a_blank_ray_token_stops_the_controller_naming_the_variable(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "LAYERFORGE_"))}
    env.update(
        RAY_AUTH_TOKEN="   ",
        RAY_ADDRESS="127.0.0.1:1",
        LAYERFORGE_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
    )
    done = subprocess.run(
        [str(BIN / "layerforge"), "controller"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "RAY_AUTH_TOKEN is empty or only whitespace" in done.stderr
    assert not (tmp_path / "c.db").exists()  # it stopped before touching anything


def script_exists(name: str) -> bool:
    if name == "layerforge":
        return PYPROJECT["project"]["scripts"].get("layerforge") == "layerforge.cli:app"
    if name == "ray":
        declared = any(re.match(r"ray\b", d) for d in PYPROJECT["project"]["dependencies"])
        installed = any(ep.name == "ray" for ep in entry_points(group="console_scripts"))
        return declared and installed
    return False


@pytest.mark.parametrize("service", ["ray-head", "ray-worker", "controller", "api"])
def test_every_command_exists_in_the_image_and_accepts_its_flags(service):
    command = SERVICES[service]["command"]
    assert script_exists(command[0]), command
    executable = BIN / command[0]
    assert executable.exists() or shutil.which(command[0]), executable
    sub = command[1]
    help_text = subprocess.run(
        [str(executable), sub, "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for flag in command[2:]:
        if flag.startswith("--"):
            assert flag.split("=")[0] in help_text, (service, flag)


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "https://download.pytorch.org/whl/cpu" in text
    assert "torch==${TORCH_VERSION}" in text
    assert 'CMD ["layerforge", "serve", "--host", "0.0.0.0"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for folder in mapping.values():
        assert f"COPY {folder} ./{folder}" in text
    stand_ins = re.search(r"for p in (.*?); do mkdir", text, re.S).group(1).split()
    stand_ins = [p for p in stand_ins if p != "\\"]
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert sorted(stand_ins) == sorted(_folder_of(p, mapping) for p in packages)


def _folder_of(package: str, mapping: dict[str, str]) -> str:
    """The repository folder that holds ``package`` under pyproject's package-dir mapping."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in mapping:
            return "/".join([mapping[".".join(parts[:n])], *parts[n:]])
    raise AssertionError(f"{package} is not under any package-dir mapping")
