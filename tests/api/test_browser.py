"""The dashboard in headless Chromium (Debian's chromium + playwright, no downloaded browser).

Over a real ``layerforge serve`` with the simulated evaluator, with every request that does
not go to the server aborted by the browser (as on a machine without internet access): the
campaign list loads, the Pareto plot has its points, the 2-D front as a staircase and the
baseline; the transfer stage's verdicts (confirmed on held-out runs, or not) are a table; PNG and CSV downloads of the front work; clicking a point opens the candidate with
its LaTeX typeset by KaTeX, its curve beside the baseline's, and its export downloads;
``/docs`` and ``/redoc`` render. Without a Chromium binary the test skips and says why.
"""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from tests.api.helpers import API, live_server, small_spec

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("LAYERFORGE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium binary (apt-get install chromium, or set LAYERFORGE_CHROMIUM); "
            ".ci/run installs it"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.skip(f"playwright is not importable: {err}")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def offline_context(browser, base: str, blocked: list[str]):
    """A browser context that reaches only ``base``; every other request is aborted and
    recorded in ``blocked``."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})

    def only_the_server(route):
        if route.request.url.startswith(base) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    return context


def test_dashboard_front_candidate_and_export(browser, tmp_path):
    with live_server(tmp_path) as base:
        spec = small_spec(
            name="browser-run",
            objectives=["accuracy", "nodes"],
            transfer={"top_k": 2, "seeds": 3, "lr_factors": [1.0]},
        )
        created = httpx.post(f"{base}{API}/campaigns", json=spec)
        cid = created.json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}{API}/campaigns/{cid}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)

        blocked: list[str] = []
        context = offline_context(browser, base, blocked)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))

        page.goto(base + "/")
        row = page.locator(f'[data-testid="campaign-row"][data-id="{cid}"]')
        row.wait_for(timeout=20_000)
        assert "browser-run" in row.inner_text() and "completed" in row.inner_text()
        row.click()

        page.wait_for_function(
            f"document.body.dataset.ready === '#/campaigns/{cid}'", timeout=20_000
        )
        points = page.locator("#pareto-plot .scatterlayer .trace .point")
        points.first.wait_for(timeout=20_000)
        assert points.count() >= 2
        assert page.locator("#hv-plot .scatterlayer .trace path.js-line").count() == 1
        assert page.locator("#funnel-plot .barlayer .point").count() >= 1
        assert page.locator('[data-testid="candidate-row"]').count() >= 5
        options = page.locator("#x-objective option").all_inner_texts()
        assert "accuracy:mlp/mnist1d" in options and "nodes" in options
        # the 2-D front of the chosen axes, drawn as a staircase line over the points
        traces = page.evaluate(
            "Array.from(document.getElementById('pareto-plot').data, "
            "t => ({name: t.name, shape: t.line && t.line.shape, meta: t.meta || null, n: t.x.length}))"
        )
        staircase = [t for t in traces if t["meta"] == "staircase"]
        assert (
            len(staircase) == 1 and staircase[0]["shape"] in ("hv", "vh") and staircase[0]["n"] >= 1
        )
        assert page.locator("#pareto-plot .scatterlayer .trace path.js-line").count() >= 1
        pareto = httpx.get(f"{base}{API}/campaigns/{cid}/pareto").json()
        evaluated = pareto["front"] + pareto["dominated"]
        baselines = [q for q in evaluated if q["origin"] == "baseline"]
        # the baseline, marked once when its evaluation completed (the simulated evaluator
        # may reject it), with a dotted line through it on each axis
        assert [t["n"] for t in traces if t["name"] == "baseline"] == [len(baselines)]
        shapes = page.evaluate("document.getElementById('pareto-plot').layout.shapes.length")
        assert shapes == 2 * len(baselines)
        # the transfer stage's verdicts, one row per re-trained candidate, baseline and control
        transfer = httpx.get(f"{base}{API}/campaigns/{cid}/transfer").json()
        assert transfer["rows"]
        rows = page.locator('[data-testid="transfer-row"]')
        rows.first.wait_for(timeout=20_000)
        assert rows.count() == len(transfer["rows"])
        verdicts = [rows.nth(i).get_attribute("data-verdict") for i in range(rows.count())]
        assert "baseline" in verdicts
        assert sum(v.startswith("scale control (raw)") for v in verdicts) == 2
        confirmed = sum(v == "beats baseline" for v in verdicts)
        assert confirmed == len(transfer["confirmed"])
        note = page.locator("#transfer-note").inner_text()
        assert ("beat the baseline" in note) if confirmed else ("did not hold" in note)
        assert "seeds" in note
        assert page.locator("#pareto-plot .legend").count() == 1
        legend = page.locator("#pareto-plot .legend").bounding_box()
        plot_area = page.locator("#pareto-plot .nsewdrag").first.bounding_box()
        assert legend["y"] + legend["height"] <= plot_area["y"] + 1  # above the axes, clear of them
        # a log scale is offered for the cost axis (nodes), not for accuracy
        assert page.locator("#log-x").is_disabled() and page.locator("#log-y").is_enabled()
        page.locator("#log-y").check()
        axis = "document.getElementById('pareto-plot').layout.yaxis.type"
        page.wait_for_function(f"{axis} === 'log'", timeout=10_000)
        page.locator("#log-y").uncheck()
        page.wait_for_function(f"{axis} === 'linear'", timeout=10_000)
        assert "reference point" in page.locator("#hv-reference").inner_text()
        assert "of the box" in page.locator('[data-stat="hypervolume"]').inner_text()

        # downloads of the front: PNG drawn in the browser, CSV from the API
        with page.expect_download(timeout=20_000) as png_info:
            page.locator('[data-testid="pareto-plot-png"]').click()
        png = tmp_path / "front.png"
        png_info.value.save_as(png)
        assert png_info.value.suggested_filename.endswith(".png")
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
        with page.expect_download(timeout=20_000) as csv_info:
            page.locator('[data-testid="pareto-plot-csv"]').click()
        table = tmp_path / csv_info.value.suggested_filename
        csv_info.value.save_as(table)
        assert table.suffix == ".csv"
        header = table.read_text().splitlines()[0]
        assert header == "candidate_id,text,origin,on_front,accuracy:mlp/mnist1d,nodes"
        with page.expect_download(timeout=20_000) as hv_info:
            page.locator('[data-testid="hv-plot-csv"]').click()
        assert hv_info.value.suggested_filename.endswith("_hypervolume.csv")

        # click the first point of the front trace (blue) at its centre
        front_point = (
            page.locator("#pareto-plot .scatterlayer .trace").nth(1).locator(".point").first
        )
        box = front_point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("location.hash.startsWith('#/candidates/')", timeout=10_000)
        candidate_id = int(page.evaluate("location.hash.split('/').pop()"))
        page.wait_for_function(
            f"document.body.dataset.ready === '#/candidates/{candidate_id}'", timeout=20_000
        )
        expected = httpx.get(f"{base}{API}/candidates/{candidate_id}").json()
        assert expected["status"] == "completed"
        assert page.locator("#candidate-text").inner_text() == expected["text"]
        assert page.locator("#candidate-latex").text_content() == expected["latex"]
        # typeset by KaTeX: its MathML and HTML trees are in the DOM
        assert page.locator("#candidate-latex-rendered .katex .katex-html").count() == 1
        assert page.locator("#candidate-latex-rendered .katex-mathml math").count() == 1
        page.locator("#curve-plot .scatterlayer .trace").nth(3).wait_for(timeout=20_000)
        names = page.evaluate("Array.from(document.getElementById('curve-plot').data, t => t.name)")
        assert names == ["f(x)", "df/dx", "relu (baseline)", "relu' (baseline)"]
        assert page.locator("#curve-plot .scatterlayer .trace").count() == 4
        assert page.locator("#export-warning").count() == 0  # a completed candidate
        # the campaign's proxy-fidelity warnings, exactly when its report has some
        report = httpx.get(f"{base}{API}/campaigns/{cid}").json()["fidelity"]
        shown = page.locator("#candidate-fidelity").inner_text()
        if report and report["warnings"]:
            assert shown.startswith("Proxy fidelity:")
            assert all(w in shown for w in report["warnings"])
        else:
            assert shown == ""

        with page.expect_download(timeout=20_000) as download_info:
            page.locator('[data-testid="export-pytorch"]').click()
        download = download_info.value
        assert download.suggested_filename.endswith(f"_candidate_{candidate_id}.py")
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        assert "import torch" in target.read_text()
        assert target.read_text().startswith("# Exported by layerforge")

        # a rejected candidate's page says so beside its export buttons
        rejected = httpx.get(
            f"{base}{API}/campaigns/{cid}/candidates", params={"status": "rejected", "limit": 1}
        ).json()["items"]
        assert rejected
        page.goto(f"{base}/#/candidates/{rejected[0]['id']}")
        page.wait_for_function(
            f"document.body.dataset.ready === '#/candidates/{rejected[0]['id']}'", timeout=20_000
        )
        assert "was rejected" in page.locator("#export-warning").inner_text()
        assert "(rejected)" in page.locator('[data-testid="export-numpy"]').inner_text()

        # the API docs, with the network blocked: Swagger UI and ReDoc render from local files
        page.goto(f"{base}/docs")
        page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() >= 10
        page.goto(f"{base}/redoc")
        page.locator("redoc [data-section-id]").first.wait_for(timeout=30_000)
        assert "layerforge" in page.locator("redoc h1").first.inner_text()

        assert errors == [], errors
        assert blocked == [], blocked
        assert all(url.startswith(base) for url in requests), [
            url for url in requests if not url.startswith(base)
        ]
        context.close()
