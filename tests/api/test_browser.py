"""The dashboard in headless Chromium (Debian's chromium + playwright, no downloaded browser).

Over a real ``layerforge serve`` with the simulated evaluator: the campaign list loads, the
Pareto plot has points, clicking a point opens the candidate with its plot and LaTeX, and
its export downloads. Without a Chromium binary the test skips and says why.
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


def test_dashboard_front_candidate_and_export(browser, tmp_path):
    with live_server(tmp_path) as base:
        created = httpx.post(f"{base}{API}/campaigns", json=small_spec(name="browser-run"))
        cid = created.json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}{API}/campaigns/{cid}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)

        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1400, "height": 1000}
        )
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
        assert "accuracy:mlp/mnist1d" in options

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
        assert page.locator("#candidate-latex").inner_text() == expected["latex"]
        page.locator("#curve-plot .scatterlayer .trace").nth(1).wait_for(timeout=20_000)
        assert page.locator("#curve-plot .scatterlayer .trace").count() == 2  # f and df/dx

        with page.expect_download(timeout=20_000) as download_info:
            page.locator('[data-testid="export-pytorch"]').click()
        download = download_info.value
        assert download.suggested_filename.endswith(f"_candidate_{candidate_id}.py")
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        assert "import torch" in target.read_text()

        assert errors == [], errors
        assert all(url.startswith(base) for url in requests), [
            url for url in requests if not url.startswith(base)
        ]
        context.close()
