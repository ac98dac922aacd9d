"""Soak the service: concurrent submissions, polling and event streams against a running
campaign, measuring errors and the server's memory over time.

    python -m tests.reliability.soak --seconds 120 [--out soak.json] [--db URL]

Starts ``layerforge serve`` (a subprocess on a free port, ``LAYERFORGE_EVALUATOR=local``,
SQLite in a temporary folder unless ``--db``), submits a background campaign that trains
tiny MLPs on digits for the whole soak, then runs for ``--seconds``:

* ``--submitters`` threads: submit a small campaign, read it, pause, resume, cancel,
  delete it (409 from an action that raced the controller counts as expected);
* ``--pollers`` threads: list campaigns, read the background campaign, its candidates,
  Pareto front, hypervolume, ``/metrics`` and ``/healthz``;
* ``--streams`` threads: follow the background campaign's event stream in 10 s slices,
  reconnecting with ``Last-Event-ID``; every event must arrive once, in order.

An error is any 5xx, any transport failure, any unexpected 4xx, or an event received twice
or out of order. The server's RSS (VmRSS of /proc/PID/status) is sampled every second.
Prints a summary and writes all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.reliability.helpers import API, Server, listening_addresses, rss_kib

BACKGROUND = {
    "name": "soak-background",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 5},
    "seeds": ["x * sigmoid(x)"],
    "strategy": {"name": "evolution", "population": 16, "tournament": 4},
    "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 20, "batch_size": 32}],
    "rejection": {"quality_steps": 5, "quality_min_accuracy": 0.05},
    "budget": {"max_candidates": 100_000, "max_seconds": 3600},
    "parallelism": 2,
}
SMALL = dict(BACKGROUND, name="soak-small", budget={"max_candidates": 3})


class Soak:
    def __init__(self, base: str, seconds: float):
        self.base = base
        self.seconds = seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self.expected_409 = 0
        self.latencies: list[float] = []
        self.submitted = 0
        self.events = 0
        self.stream_connections = 0

    def error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 200:
                self.errors.append(text)
            else:
                self.errors[-1] = f"... and more; last: {text}"

    def call(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        ok=(200,),
        json_body=None,
        allow_409=False,
    ) -> httpx.Response | None:
        t0 = time.monotonic()
        try:
            response = client.request(method, path, json=json_body)
        except httpx.HTTPError as err:
            self.error(f"{method} {path}: {type(err).__name__}: {err}")
            return None
        elapsed = time.monotonic() - t0
        with self.lock:
            self.requests[f"{method} {re.sub(r'/[0-9]+', '/{id}', path.split('?')[0])}"] += 1
            self.statuses[response.status_code] += 1
            self.latencies.append(elapsed)
        if response.status_code in ok:
            return response
        if response.status_code == 409 and allow_409:
            with self.lock:
                self.expected_409 += 1
            return response
        self.error(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return None

    def submitter(self, index: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                spec = dict(SMALL, name=f"soak-small-{index}-{self.submitted}")
                response = self.call(client, "POST", f"{API}/campaigns", ok=(202,), json_body=spec)
                if response is None:
                    self.stop.wait(0.5)
                    continue
                with self.lock:
                    self.submitted += 1
                cid = response.json()["id"]
                self.call(client, "GET", f"{API}/campaigns/{cid}")
                self.call(client, "POST", f"{API}/campaigns/{cid}/pause", allow_409=True)
                self.call(client, "POST", f"{API}/campaigns/{cid}/resume", allow_409=True)
                self.call(client, "POST", f"{API}/campaigns/{cid}/cancel", allow_409=True)
                self.call(client, "DELETE", f"{API}/campaigns/{cid}", ok=(204,), allow_409=True)
                self.stop.wait(0.2)

    def poller(self, background: int, routes: tuple[str, ...] = ()) -> None:
        """GET every route of :data:`POLLED` (or only ``routes``) in turn until the soak ends."""
        paths = [
            path.format(api=API, id=background)
            for name, path in POLLED.items()
            if not routes or name in routes
        ]
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                for path in paths:
                    self.call(client, "GET", path)
                self.stop.wait(0.1)

    def streamer(self, background: int) -> None:
        last = 0
        while not self.stop.is_set():
            with self.lock:
                self.stream_connections += 1
            try:
                with httpx.stream(
                    "GET",
                    f"{self.base}{API}/campaigns/{background}/events",
                    params={"timeout": 10},
                    headers={"Last-Event-ID": str(last)},
                    timeout=30,
                ) as response:
                    if response.status_code != 200:
                        self.error(f"events: {response.status_code}")
                        self.stop.wait(1)
                        continue
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                            if event_id <= last:
                                self.error(f"event {event_id} after {last}: repeated/out of order")
                            last = event_id
                            with self.lock:
                                self.events += 1
                        if self.stop.is_set():
                            break
            except httpx.HTTPError as err:
                self.error(f"events: {type(err).__name__}: {err}")
                self.stop.wait(1)


#: What a poller reads, by name (``--poll`` picks some: to find which one a growth follows).
POLLED = {
    "campaigns": "{api}/campaigns",
    "campaign": "{api}/campaigns/{id}",
    "candidates": "{api}/campaigns/{id}/candidates?limit=50",
    "pareto": "{api}/campaigns/{id}/pareto",
    "hypervolume": "{api}/campaigns/{id}/hypervolume?max_points=200",
    "metrics": "/metrics",
    "healthz": "/healthz",
    "ops": "{api}/ops",
}


def run(
    seconds: float,
    *,
    database_url: str | None = None,
    folder: Path | None = None,
    submitters: int = 2,
    pollers: int = 3,
    streams: int = 2,
    sample_s: float = 1.0,
    evaluator: str = "local",
    poll: tuple[str, ...] = (),
) -> dict:
    folder = Path(folder or tempfile.mkdtemp(prefix="lf-soak-"))
    url = database_url or f"sqlite:///{folder / 'soak.db'}"
    server = Server(
        url, folder, env={"LAYERFORGE_EVALUATOR": evaluator, "LAYERFORGE_MAX_CAMPAIGNS": "3"}
    )
    server.start()
    listening = listening_addresses(server.pid)
    rss: list[tuple[float, int]] = []
    try:
        background = httpx.post(
            f"{server.base}{API}/campaigns", json=BACKGROUND, timeout=30
        ).json()["id"]
        # let the background campaign start and the first evaluations warm torch up
        deadline = time.monotonic() + 60
        while (
            httpx.get(f"{server.base}{API}/campaigns/{background}", timeout=30).json()["progress"][
                "candidates"
            ]
            < 3
        ):
            assert time.monotonic() < deadline, "the background campaign did not start"
            time.sleep(0.2)
        soak = Soak(server.base, seconds)
        threads = (
            [threading.Thread(target=soak.submitter, args=(i,)) for i in range(submitters)]
            + [
                threading.Thread(target=soak.poller, args=(background, poll))
                for _ in range(pollers)
            ]
            + [threading.Thread(target=soak.streamer, args=(background,)) for _ in range(streams)]
        )
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - t0 < seconds:
            value = rss_kib(server.pid)
            if value is not None:
                rss.append((round(time.monotonic() - t0, 1), value))
            time.sleep(sample_s)
        soak.stop.set()
        for thread in threads:
            thread.join(60)
        duration = time.monotonic() - t0
        detail = httpx.get(f"{server.base}{API}/campaigns/{background}", timeout=30).json()
        alive = server.proc.poll() is None
    finally:
        server.stop()
    values = [v for _, v in rss]
    quarter = values[len(values) // 4] if values else 0
    latencies = sorted(soak.latencies)
    figures = {
        "seconds": round(duration, 1),
        "server_alive_at_end": alive,
        "requests": sum(soak.requests.values()),
        "requests_per_second": round(sum(soak.requests.values()) / duration, 1),
        "by_route": dict(soak.requests.most_common()),
        "statuses": {str(k): v for k, v in sorted(soak.statuses.items())},
        "errors": len(soak.errors),
        "error_samples": soak.errors[:20],
        "expected_409": soak.expected_409,
        "campaigns_submitted": soak.submitted,
        "events_received": soak.events,
        "stream_connections": soak.stream_connections,
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p95": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)
            if latencies
            else None,
            "max": round(1000 * latencies[-1], 1) if latencies else None,
        },
        "background_campaign": {
            "status": detail["status"],
            "candidates": detail["progress"]["candidates"],
            "counts": detail["counts"],
        },
        "rss_mib": {
            "start": round(values[0] / 1024, 1) if values else None,
            "after_first_quarter": round(quarter / 1024, 1),
            "end": round(values[-1] / 1024, 1) if values else None,
            "max": round(max(values) / 1024, 1) if values else None,
            "growth_after_first_quarter": round((values[-1] - quarter) / 1024, 1)
            if values
            else None,
        },
        "rss_samples_kib": rss,
        "server_start_seconds": [round(s, 1) for s in server.start_seconds],
        "database_url": url.split("@")[-1],
        "port": server.port,
        "listening": listening,
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--db", default=None, help="database URL (default: SQLite in a temp folder)"
    )
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--submitters", type=int, default=2)
    parser.add_argument("--pollers", type=int, default=3)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--evaluator", default="local", choices=["local", "simulated"])
    parser.add_argument(
        "--poll", nargs="+", default=(), choices=sorted(POLLED), help="poll only these routes"
    )
    args = parser.parse_args()
    figures = run(
        args.seconds,
        database_url=args.db,
        submitters=args.submitters,
        pollers=args.pollers,
        streams=args.streams,
        evaluator=args.evaluator,
        poll=tuple(args.poll),
    )
    summary = {k: v for k, v in figures.items() if k != "rss_samples_kib"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
