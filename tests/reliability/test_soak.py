"""A short soak (about 10 s) of the live service; and its default bind is loopback only.

The full soak (``python -m tests.reliability.soak --seconds 120``) is run by hand and its
figures are in docs/RELIABILITY.md; this version keeps the same load in the suite: 0 errors
and bounded memory growth of the server once warm.
"""

from __future__ import annotations

import pytest

from tests.reliability.soak import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_short_soak_has_no_errors_bounded_memory_and_binds_loopback(tmp_path):
    figures = run(10, folder=tmp_path, submitters=2, pollers=2, streams=2)
    print(
        f"\n[soak 10 s] requests={figures['requests']} ({figures['requests_per_second']}/s) "
        f"errors={figures['errors']} submitted={figures['campaigns_submitted']} "
        f"events={figures['events_received']} rss={figures['rss_mib']} "
        f"latency={figures['latency_ms']}"
    )
    assert figures["server_alive_at_end"]
    # started without LAYERFORGE_HOST: the server listens on 127.0.0.1 and nowhere else
    assert figures["listening"] == [f"127.0.0.1:{figures['port']}"], figures["listening"]
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["requests"] > 100 and figures["campaigns_submitted"] >= 2
    assert figures["events_received"] > 0
    # once warm, 10 s of load must not grow the server by more than 64 MiB
    assert figures["rss_mib"]["growth_after_first_quarter"] < 64, figures["rss_mib"]
