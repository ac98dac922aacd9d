"""Bad input over the real app: the malformed-spec corpus, and fuzzing of user text that
reaches the grammar through the API (the ``seeds`` field).

Every corpus case is POSTed to ``/api/v1/campaigns`` and must get a 4xx in the error shape
whose message contains the case's fragment (the field's path, or what is wrong), and
nothing may be stored. (tests/api/test_campaigns.py has the first dozen of these; the
corpus in bad_specs.py is the long list.)
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Campaign, Candidate
from tests.api.helpers import API, make_app
from tests.reliability.bad_specs import CASES, Raw, apply, valid_spec


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("bad-input"))
    with TestClient(app) as test_client:
        yield test_client


def stored(client) -> tuple[int, int]:
    url = client.app.state.settings.database_url
    with session_scope(get_engine(url), readonly=True) as s:
        return s.query(Campaign).count(), s.query(Candidate).count()


def nothing_stored(client) -> bool:
    return stored(client) == (0, 0)


def post(client, body):
    if isinstance(body, Raw):
        return client.post(
            f"{API}/campaigns", content=body.content, headers={"Content-Type": body.content_type}
        )
    return client.post(f"{API}/campaigns", json=apply(body))


def test_the_corpus_is_big_and_the_valid_spec_is_valid(client):
    assert len(CASES) >= 40
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)
    response = client.post(f"{API}/campaigns", json=valid_spec())
    assert response.status_code == 202, response.text
    client.delete(f"{API}/campaigns/{response.json()['id']}")  # queued: 409, so cancel first
    client.post(f"{API}/campaigns/{response.json()['id']}/cancel")
    assert client.delete(f"{API}/campaigns/{response.json()['id']}").status_code == 204
    assert nothing_stored(client)


@pytest.mark.parametrize("case_id,body,fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_a_4xx_naming_the_field_and_stores_nothing(
    client, case_id, body, fragment
):
    before = stored(client)
    response = post(client, body)
    if response.status_code == 202:  # keep the next cases' "nothing stored" meaningful
        client.post(f"{API}/campaigns/{response.json()['id']}/cancel")
        client.delete(f"{API}/campaigns/{response.json()['id']}")
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    assert fragment in error["message"], (fragment, error["message"][:500])
    assert stored(client) == before


# The seeds field carries user text to the grammar's parser: whatever the text, the answer
# is 202 or a 422 naming seeds[i], never a 500, and a rejected spec stores nothing.
SEED_ALPHABET = "x0123456789.+-*/()^, abcdefghijklmnopqrstuvwyz_[]{}'\"\\;:=<>!@#$%&|~`?é×\x00"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.text(alphabet=SEED_ALPHABET, max_size=60)
        | st.sampled_from(
            ["relu", "x * sigmoid(x)", "max(x, tanh(x))", "exp(-x^2)", "__import__", "x.__class__"]
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fuzzed_seeds_are_accepted_or_named_never_a_500(client, seeds):
    spec = dict(valid_spec(), seeds=seeds)
    response = client.post(f"{API}/campaigns", json=spec)
    if response.status_code == 202:
        campaign_id = response.json()["id"]
        client.post(f"{API}/campaigns/{campaign_id}/cancel")
        assert client.delete(f"{API}/campaigns/{campaign_id}").status_code == 204
        return
    assert response.status_code == 422, (seeds, response.status_code, response.text[:300])
    message = response.json()["error"]["message"]
    assert "seeds" in message, (seeds, message)
    assert nothing_stored(client)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_fuzzed_json_bodies_are_4xx_never_a_500(client, body):
    response = client.post(
        f"{API}/campaigns", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, (body, response.status_code, response.text[:300])
    assert nothing_stored(client)


NUL_CASES = [
    ({"name": "tiny\x00"}, "name"),
    ({"seeds": ["x * sigmoid(x)", "relu\x00"]}, "seeds[1]"),
    ({"space": {"kind": "activation", "ops": ["x\x00"]}}, "space.ops[0]"),
    ({"proxies": [{"arch": "mlp", "dataset": "mnist1d", "scale": "c\x00pu"}]}, "proxies[0].scale"),
    (
        {"proxies": [{"arch": "mlp", "dataset": "cifar10", "dataset_options": {"root": "/d\x00"}}]},
        "proxies[0].dataset_options.root",
    ),
]


@pytest.mark.parametrize("change,path", NUL_CASES, ids=[p for _, p in NUL_CASES])
def test_a_nul_in_any_text_is_a_422_naming_the_field_on_sqlite_and_postgres(
    tmp_path, database_url, change, path
):
    from tests.api.helpers import small_spec

    app = make_app(tmp_path, database_url=database_url)
    with TestClient(app) as nul_client:
        response = nul_client.post(f"{API}/campaigns", json=small_spec(**change))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith(f"{path}: "), response.text
        assert "NUL" in response.json()["error"]["message"]
        assert nothing_stored(nul_client)
        ok = nul_client.post(f"{API}/campaigns", json=small_spec(name="tiny \\u0000 text"))
        assert ok.status_code == 202, ok.text  # an escaped backslash is no NUL


def _cursor(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_CAND = '"k":"candidates","order":"desc","status":null'
CURSOR_CASES = [
    ("/campaigns", "not-a-cursor!"),
    ("/campaigns", _cursor('{"k":"candidates","id":1,"status":null}')),
    ("/campaigns", _cursor('{"k":"campaigns","id":99999999999999,"status":null}')),
    ("/campaigns", _cursor('{"k":"campaigns","id":true,"status":null}')),
    ("/campaigns", _cursor('{"k":"campaigns","id":-1,"status":null}')),
    ("/campaigns", _cursor('{"k":"campaigns","id":"1","status":null}')),
    ("/campaigns/1/candidates", _cursor("[1, 2]")),
    ("/campaigns/1/candidates", _cursor("{" + _CAND + ',"id":99999999999999,"sort":null}')),
    ("/campaigns/1/candidates", _cursor("{" + _CAND + ',"id":true,"sort":null}')),
    ("/campaigns/1/candidates", _cursor("{" + _CAND + ',"id":1.5,"sort":null}')),
    (
        "/campaigns/1/candidates",
        _cursor("{" + _CAND + ',"id":1,"sort":"accuracy:mlp/mnist1d","v":NaN}'),
        "sort=accuracy:mlp/mnist1d",
    ),
    (
        "/campaigns/1/candidates",
        _cursor("{" + _CAND + ',"id":1,"sort":"accuracy:mlp/mnist1d","v":1e400}'),
        "sort=accuracy:mlp/mnist1d",
    ),
]


@pytest.mark.parametrize("case", CURSOR_CASES, ids=[str(i) for i in range(len(CURSOR_CASES))])
def test_a_forged_cursor_is_a_400_naming_the_cursor_on_sqlite_and_postgres(
    tmp_path, database_url, case
):
    from tests.api.helpers import small_spec

    path, cursor, *query = case
    app = make_app(tmp_path, database_url=database_url)
    with TestClient(app) as cursor_client:
        assert cursor_client.post(f"{API}/campaigns", json=small_spec()).status_code == 202
        extra = "&" + query[0] if query else ""
        response = cursor_client.get(f"{API}{path}?cursor={cursor}{extra}")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "bad_cursor" and "cursor" in error["message"], error
