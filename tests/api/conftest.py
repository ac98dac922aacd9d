"""Fixtures of the API tests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import make_app


@pytest.fixture
def app(tmp_path):
    """An app with no controller: campaigns stay where the test puts them."""
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def live_client(tmp_path):
    """An app whose controller runs campaigns with the simulated evaluator."""
    application = make_app(tmp_path, run_controller=True)
    with TestClient(application) as test_client:
        yield test_client
