"""The Ray cluster token setting: read from RAY_AUTH_TOKEN (or LAYERFORGE_RAY_AUTH_TOKEN),
refused at start-up with the variable's name when Ray could not use it, never printed."""

from __future__ import annotations

import pytest

from layerforge.api.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def no_ray_variables(monkeypatch):
    for name in ("RAY_AUTH_TOKEN", "LAYERFORGE_RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty or only whitespace"),
        ("   ", "is empty or only whitespace"),
        ("\t\n", "is empty or only whitespace"),
        (" abc123", "starts or ends with whitespace"),
        ("abc123\n", "starts or ends with whitespace"),
        ("abc\x07123", "printable ASCII"),
        ("abcé123", "printable ASCII"),
    ],
)
@pytest.mark.parametrize("variable", ["RAY_AUTH_TOKEN", "LAYERFORGE_RAY_AUTH_TOKEN"])
def test_a_token_ray_cannot_use_stops_start_up_naming_the_variable(
    monkeypatch, variable, value, problem
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(f"{variable} ") and problem in message, message


def test_a_token_with_auth_switched_off_is_refused(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0123abcd" * 8)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(
        SettingsError, match="RAY_AUTH_TOKEN is set but RAY_AUTH_MODE is 'disabled'"
    ):
        load_settings()


def test_a_good_token_is_kept_and_never_shown(monkeypatch):
    token = "0123abcd" * 8
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    settings = load_settings()
    assert settings.ray_auth_token == token
    assert token not in repr(settings) and token not in str(settings)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert load_settings().ray_auth_token == token
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert load_settings().ray_auth_token is None  # no token: Ray's own default applies
