"""What a researcher takes away from the service: exports with their provenance, the front
and the hypervolume as CSV / SVG / PNG, the normalized hypervolume with its reference box,
the baseline beside each curve, local API docs, and Prometheus metrics with latencies.

Over the app with its controller and the simulated evaluator (a finished campaign), and an
app without one (campaigns stay as the test leaves them).
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from layerforge.api import layerforge_version
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from tests.api.helpers import API, small_spec, wait_for

OBJ = "accuracy:mlp/mnist1d"


@pytest.fixture
def finished(live_client):
    spec = small_spec(objectives=["accuracy", "nodes"], budget={"max_candidates": 20})
    campaign_id = live_client.post(f"{API}/campaigns", json=spec).json()["id"]
    wait_for(live_client, campaign_id)
    return live_client, campaign_id


def _candidates(client, campaign_id, status=None):
    params = {"limit": 100, **({"status": status} if status else {})}
    return client.get(f"{API}/campaigns/{campaign_id}/candidates", params=params).json()["items"]


# ---------------------------------------------------------------- exports


def test_export_header_names_version_campaign_candidate_status_and_values(finished):
    client, campaign_id = finished
    done = _candidates(client, campaign_id, "completed")[0]
    response = client.get(f"{API}/candidates/{done['id']}/export", params={"format": "pytorch"})
    assert response.status_code == 200 and "x-layerforge-warning" not in response.headers
    text = response.text
    header = [line for line in text.splitlines() if line.startswith("# ")]
    assert header[0] == f"# Exported by layerforge {layerforge_version()} as pytorch"
    assert f"# candidate {done['id']} of campaign {campaign_id} (tiny)" in header
    assert f"# layer: {done['text']}" in header
    assert any(line.startswith("# status: completed") for line in header)
    values = next(line for line in header if line.startswith("# objectives: "))
    assert f"{OBJ} = {done['objectives'][OBJ]:.6g}" in values and "nodes = " in values
    assert any(line.startswith("# gain constant: ") for line in header)
    assert not any("WARNING" in line for line in header)
    assert text.endswith("\n") and not text.endswith("\n\n")
    compile(text, "export.py", "exec")  # the header is comments: still Python


@pytest.mark.parametrize("fmt", ["pytorch", "numpy", "jax", "sympy", "latex", "json"])
def test_rejected_candidates_export_with_a_warning(finished, fmt):
    client, campaign_id = finished
    rejected = _candidates(client, campaign_id, "rejected")
    assert rejected, "the simulated evaluator rejects some candidates"
    candidate = client.get(f"{API}/candidates/{rejected[0]['id']}").json()
    response = client.get(f"{API}/candidates/{candidate['id']}/export", params={"format": fmt})
    assert response.status_code == 200
    warning = response.headers["x-layerforge-warning"]
    assert warning.startswith(f"candidate {candidate['id']} was rejected")
    assert candidate["rejection"]["stage"] in warning
    if fmt == "json":
        data = json.loads(response.text)
        assert data["provenance"]["warning"] == warning
        assert data["provenance"]["candidate"]["status"] == "rejected"
    else:
        marker = "% " if fmt == "latex" else "# "
        assert f"{marker}WARNING: {warning}" in response.text.splitlines()
    assert response.text.endswith("\n")


def test_cli_export_prints_the_warning_on_stderr(tmp_path):
    """``layerforge export ID`` against a live server: the file on stdout, the warning on
    stderr."""
    import subprocess

    from tests.api.helpers import LAYERFORGE, live_server

    with live_server(tmp_path) as base:
        import httpx

        spec = small_spec(name="cli-export", budget={"max_candidates": 20})
        campaign_id = httpx.post(f"{base}{API}/campaigns", json=spec).json()["id"]
        wait_for(httpx.Client(base_url=base), campaign_id)
        page = httpx.get(
            f"{base}{API}/campaigns/{campaign_id}/candidates",
            params={"status": "rejected", "limit": 1},
        ).json()["items"]
        assert page
        run = subprocess.run(
            [
                LAYERFORGE,
                "export",
                str(page[0]["id"]),
                "--server",
                base,
                "-f",
                "numpy",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr
    assert "warning:" in run.stderr and "was rejected" in run.stderr
    assert run.stdout.startswith("# Exported by layerforge") and "def layer" in run.stdout


# ---------------------------------------------------------------- downloads


def test_pareto_csv_has_every_evaluated_candidate_once(finished):
    client, campaign_id = finished
    response = client.get(f"{API}/campaigns/{campaign_id}/pareto/download?format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="tiny_' in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["candidate_id", "text", "origin", "on_front", OBJ, "nodes"]
    pareto = client.get(f"{API}/campaigns/{campaign_id}/pareto").json()
    ids = sorted(p["candidate_id"] for p in pareto["front"] + pareto["dominated"])
    assert [int(r[0]) for r in rows[1:]] == ids
    on_front = {int(r[0]) for r in rows[1:] if r[3] == "1"}
    assert on_front == {p["candidate_id"] for p in pareto["front"]}
    by_id = {p["candidate_id"]: p for p in pareto["front"] + pareto["dominated"]}
    for row in rows[1:]:
        assert float(row[4]) == pytest.approx(by_id[int(row[0])]["values"][OBJ])


def test_hypervolume_csv_and_normalized_values(finished):
    client, campaign_id = finished
    detail = client.get(f"{API}/campaigns/{campaign_id}").json()
    box = detail["hypervolume_box"]
    assert box["reference"] == {OBJ: 0.0, "nodes": 68.0} and box["ideal"] == {
        OBJ: 1.0,
        "nodes": 0.0,
    }
    assert box["volume"] == pytest.approx(68.0)
    assert detail["hypervolume_normalized"] == pytest.approx(detail["hypervolume"] / 68.0)
    assert 0 < detail["hypervolume_normalized"] <= 1
    history = client.get(f"{API}/campaigns/{campaign_id}/hypervolume").json()
    assert history["box"] == box
    response = client.get(f"{API}/campaigns/{campaign_id}/hypervolume/download?format=csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(history["points"])
    for row, point in zip(rows, history["points"]):
        assert int(row["evaluations"]) == point["evaluations"]
        assert float(row["hypervolume_normalized"]) == pytest.approx(
            point["hypervolume_normalized"]
        )
        assert float(row["hypervolume_normalized"]) == pytest.approx(float(row["hypervolume"]) / 68)


@pytest.mark.parametrize("what", ["pareto", "hypervolume"])
def test_figures_as_png_and_svg(finished, what):
    pytest.importorskip("matplotlib", reason="the server draws SVG / PNG with matplotlib")
    client, campaign_id = finished
    png = client.get(f"{API}/campaigns/{campaign_id}/{what}/download?format=png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 5000
    svg = client.get(f"{API}/campaigns/{campaign_id}/{what}/download?format=svg")
    assert svg.status_code == 200 and svg.text.lstrip().startswith("<?xml")
    assert "<svg" in svg.text
    # the same campaign gives the same file (no creation date inside)
    again = client.get(f"{API}/campaigns/{campaign_id}/{what}/download?format=svg")
    assert again.content == svg.content


def test_pareto_figure_axes_are_checked(finished):
    client, campaign_id = finished
    bad = client.get(f"{API}/campaigns/{campaign_id}/pareto/download?format=svg&x=speed")
    assert bad.status_code == 422 and "query.x" in bad.json()["error"]["message"]
    assert "nodes" in bad.json()["error"]["message"]


def test_download_without_completed_candidates_is_a_409_naming_why(client):
    campaign_id = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]  # queued
    for what in ("pareto", "hypervolume"):
        for fmt in ("csv", "png"):
            response = client.get(f"{API}/campaigns/{campaign_id}/{what}/download?format={fmt}")
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "nothing_to_download"
            assert f"campaign {campaign_id} has no completed candidate" in error["message"]
    bad = client.get(f"{API}/campaigns/{campaign_id}/pareto/download?format=gif")
    assert bad.status_code == 422
    missing = client.get(f"{API}/campaigns/999999/pareto/download")
    assert missing.status_code == 404


# ---------------------------------------------------------------- curve, docs


def test_curve_carries_the_baseline(finished):
    client, campaign_id = finished
    done = _candidates(client, campaign_id, "completed")[0]
    curve = client.get(f"{API}/candidates/{done['id']}/curve?points=11").json()
    assert curve["baseline"] == "relu"
    assert curve["baseline_y"] == [max(v, 0.0) for v in curve["x"]]
    assert curve["baseline_dy"][:5] == [0.0] * 5 and curve["baseline_dy"][-5:] == [1.0] * 5


def test_normact_curve_carries_bn_relu(client):
    spec = small_spec(space={"kind": "normact", "ops": "evonorm", "max_nodes": 8}, seeds=[])
    campaign_id = client.post(f"{API}/campaigns", json=spec).json()["id"]
    from layerforge.grammar import get_builtin, to_text

    graph = get_builtin("evonorm_b0")
    engine = get_engine(client.app.state.settings.database_url)
    with session_scope(engine) as s:
        (cid,) = repo.add_candidates(
            s,
            campaign_id=campaign_id,
            rows=[
                {
                    "graph": graph.to_dict(),
                    "text": to_text(graph),
                    "fingerprint": "f",
                    "origin": "seed",
                    "parent_ids": [],
                    "num_nodes": graph.num_nodes,
                    "strategy_data": {},
                    "status": "proposed",
                }
            ],
        )
    curve = client.get(f"{API}/candidates/{cid}/curve?points=40").json()
    assert curve["baseline"] == "bn_relu" and len(curve["baseline_y"]) == len(curve["x"])
    assert min(curve["baseline_y"]) >= 0.0 and curve["baseline_dy"] is None


def test_docs_and_redoc_use_local_assets_only(client):
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "cdn" not in page.text.lower() and "fonts.googleapis" not in page.text
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
    assert "/openapi.json" in client.get("/docs").text


def test_katex_is_served_with_its_fonts(client):
    css = client.get("/static/vendor/katex/katex.min.css")
    assert css.status_code == 200
    fonts = sorted(set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css.text)))
    assert len(fonts) >= 10
    for font in fonts:
        assert client.get(f"/static/vendor/katex/{font}").status_code == 200, font
    js = client.get("/static/vendor/katex/katex.min.js")
    assert js.status_code == 200 and b"katex" in js.content[:2000].lower()
    assert client.get("/static/vendor/katex/LICENSE").status_code == 200


# ---------------------------------------------------------------- metrics


def _families(client) -> dict:
    return {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}


def test_metrics_have_latency_histograms_per_route_and_controller_gauges(finished):
    client, campaign_id = finished
    for _ in range(3):
        client.get(f"{API}/campaigns/{campaign_id}")
    families = _families(client)  # parsed by prometheus_client's own parser
    latency = families["layerforge_http_request_duration_seconds"]
    assert latency.type == "histogram"
    counts = {
        (s.labels["method"], s.labels["route"]): s.value
        for s in latency.samples
        if s.name.endswith("_count")
    }
    assert counts[("GET", f"{API}/campaigns/{{campaign_id}}")] >= 3
    assert counts[("POST", f"{API}/campaigns")] == 1
    buckets = [
        s
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["route"] == f"{API}/campaigns/{{campaign_id}}"
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= 3
    gauges = {
        name: families[name].samples[0].value
        for name in (
            "layerforge_evaluations_in_flight",
            "layerforge_evaluation_queue_depth",
            "layerforge_campaign_queue_depth",
            "layerforge_controller_active_runners",
        )
    }
    assert gauges == {
        "layerforge_evaluations_in_flight": 0,
        "layerforge_evaluation_queue_depth": 0,
        "layerforge_campaign_queue_depth": 0,
        "layerforge_controller_active_runners": 0,
    }
    candidates = {s.labels["status"]: s.value for s in families["layerforge_candidates"].samples}
    assert sum(candidates.values()) == 20 and candidates["completed"] >= 1


def test_metrics_count_answers_sent_from_the_cache(finished):
    client, campaign_id = finished
    path = f"{API}/campaigns/{campaign_id}/pareto"
    route = f"{API}/campaigns/{{campaign_id}}/pareto"
    client.get(path)  # built by the route (and cached)
    before = _families(client)

    def value(families, family, sample, **labels):
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return 0.0

    for _ in range(4):
        assert client.get(path).status_code == 200
    after = _families(client)
    assert (
        value(
            after,
            "layerforge_http_cached_responses",
            "layerforge_http_cached_responses_total",
            route=route,
        )
        - value(
            before,
            "layerforge_http_cached_responses",
            "layerforge_http_cached_responses_total",
            route=route,
        )
        == 4
    )
    count = "layerforge_http_request_duration_seconds_count"
    family = "layerforge_http_request_duration_seconds"
    assert value(after, family, count, route=route) - value(before, family, count, route=route) == 4


def test_metrics_show_queued_campaigns_and_evaluations_in_flight(client):
    first = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    client.post(f"{API}/campaigns", json=small_spec(name="second"))
    engine = get_engine(client.app.state.settings.database_url)
    from layerforge.grammar import get_builtin, to_text

    graph = get_builtin("silu")
    with session_scope(engine) as s:
        ids = repo.add_candidates(
            s,
            campaign_id=first,
            rows=[
                {
                    "graph": graph.to_dict(),
                    "text": to_text(graph),
                    "fingerprint": f"f{i}",
                    "origin": "seed",
                    "parent_ids": [],
                    "num_nodes": graph.num_nodes,
                    "strategy_data": {},
                    "status": "running",
                }
                for i in range(3)
            ],
        )
        repo.add_running_evaluations(
            s, campaign_id=first, candidate_ids=ids, owner="test", lease_seconds=60
        )
    families = _families(client)
    assert families["layerforge_campaign_queue_depth"].samples[0].value == 2
    assert families["layerforge_evaluations_in_flight"].samples[0].value == 3
