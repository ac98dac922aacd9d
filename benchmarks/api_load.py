"""Benchmark 7: the HTTP API under load.

Fills a SQLite database (temp dir) with a campaign of 10,000 candidates through the real
controller loop (``search.campaign.CampaignRunner`` with ``SimulatedEvaluator``), starts
``layerforge serve`` as a subprocess on a free port (``LAYERFORGE_EVALUATOR=simulated``), submits
a second campaign over HTTP so the service's controller keeps writing during the test, and
runs 50 concurrent clients (threads, one keep-alive ``http.client.HTTPConnection`` each) that
cycle through reading the full campaign's Pareto front, candidate pages (by id and sorted by
an objective) and single candidates. Reports p50 / p99 latency per endpoint, throughput and the
error count (non-2xx or transport errors).

The clients share this machine's cores with the server, so they must cost little: the standard
library's ``http.client`` spends about 0.2 ms of CPU per request here where ``httpx`` spent
0.5 ms (1.9 ms on the 1.4 MB Pareto answer), which at several hundred requests per second
took a third of a core away from the server being measured. Each answer is read in full;
bodies are decoded only to report an error.

Baseline (same process): the same requests from one client with nothing else running, so the
p99 ratio separates the cost of concurrency from the cost of the endpoint itself. When the
goal is missed, the slowest endpoint is profiled in-process (cProfile of the route function
plus its response model's validation and JSON serialisation) and the top functions reported.

The background campaign runs three times, on a fresh server each time. At a cluster's pace
(each simulated evaluation takes ``parallelism / cluster_candidates_per_s`` seconds, so the
controller stores about 167 candidates/s, the rate of 10,000 workers at one minute per
evaluation) in a ``layerforge controller`` process beside a service that runs none: the
docker-compose layout, which the goal is judged on. At the same pace with the controller
inside the service (``make serve``). And flat out inside the service (zero-second
evaluations: the controller at its top speed, several hundred candidates/s, competing with
the API for the server's one interpreter), a stress figure.

The stored campaign is filled by the simulated evaluator with ``describe=True``: like the
real workers, it returns each candidate's LaTeX with its result, so the detail endpoint reads
the formula instead of running SymPy for it.

Goal: p99 <= 100 ms on every endpoint, 0 errors.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GOAL = (
    "p99 <= 100 ms per endpoint with 50 concurrent clients on a 10,000-candidate campaign; 0 errors"
)
CONFIG: dict[str, Any] = {
    "candidates": 10_000,
    "quick_candidates": 1_000,
    "clients": 50,
    "quick_clients": 10,
    "seconds": 30.0,
    "quick_seconds": 2.0,
    "baseline_requests": 20,
    "page_limit": 50,
    "p99_goal_ms": 100.0,
    "fill_workers": 1000,
    # the background campaign's pace: 10,000 workers at one minute per evaluation
    "cluster_candidates_per_s": 10_000 / 60,
    "spec": {
        "name": "api-load",
        "space": {"kind": "activation", "ops": "swish", "max_nodes": 8},
        "strategy": {"name": "evolution", "population": 256, "tournament": 16},
        "proxies": [{"arch": "mlp", "dataset": "mnist1d"}, {"arch": "mlp", "dataset": "digits"}],
        "objectives": ["accuracy", "nodes"],
    },
    "background_spec": {
        "name": "background",
        "space": {"kind": "normact", "ops": "evonorm"},
        "strategy": {"name": "evolution", "population": 64},
        "proxies": [{"arch": "resnet", "dataset": "digits"}],
        "budget": {"max_candidates": 1_000_000, "max_seconds": 3600},
        "parallelism": 64,
    },
}


def _fill(url: str, n: int) -> int:
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import SimulatedEvaluator
    from layerforge.search.queries import create_campaign
    from layerforge.search.spec import validate_spec
    from layerforge.storage import upgrade_database

    upgrade_database(url)
    spec = validate_spec(
        {
            **CONFIG["spec"],
            "parallelism": CONFIG["fill_workers"],
            "budget": {"max_candidates": n, "max_seconds": 3600},
        }
    )
    cid = create_campaign(url, spec)
    # describe: each result carries the formula, as the evaluation workers store it
    evaluator = SimulatedEvaluator(workers=CONFIG["fill_workers"], describe=True)
    status = CampaignRunner(url, cid, evaluator, poll_s=0.0).run()
    if status != "completed":
        raise RuntimeError(f"filling campaign ended {status}")
    return cid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _endpoints(cid: int, ids: list[int], rng: random.Random) -> list[tuple[str, str]]:
    lim = CONFIG["page_limit"]
    return [
        ("pareto", f"/api/v1/campaigns/{cid}/pareto"),
        ("candidates_by_id", f"/api/v1/campaigns/{cid}/candidates?limit={lim}"),
        (
            "candidates_sorted",
            f"/api/v1/campaigns/{cid}/candidates?sort=accuracy:mlp/mnist1d&limit={lim}",
        ),
        ("candidate", f"/api/v1/candidates/{rng.choice(ids)}"),
    ]


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def _summ(lat: dict[str, list[float]], errors: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {
        k: {
            "requests": len(v),
            "p50_ms": round(_pct(v, 0.5) * 1e3, 1) if v else None,
            "p99_ms": round(_pct(v, 0.99) * 1e3, 1) if v else None,
            "max_ms": round(max(v) * 1e3, 1) if v else None,
            "errors": errors.get(k, 0),
        }
        for k, v in lat.items()
    }


class _Client:
    """One keep-alive HTTP/1.1 connection (reopened after a transport error)."""

    def __init__(self, base: str, timeout: float = 30.0):
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.conn: Any = None

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of ``GET path``; raises ``OSError`` / ``http.client.HTTPException``."""
        import http.client

        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _load(base: str, cid: int, ids: list[int], clients: int, seconds: float) -> dict[str, Any]:
    import http.client

    lat: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    samples: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[str, list[float]] = {}
        errs: dict[str, int] = {}
        connection = _Client(base)
        while time.perf_counter() < stop:
            for name, path in _endpoints(cid, ids, rng):
                t0 = time.perf_counter()
                try:
                    status, body = connection.get(path)
                    ok = status == 200
                except (OSError, http.client.HTTPException) as exc:
                    ok, status, body = False, None, f"{type(exc).__name__} {exc}".encode()
                mine.setdefault(name, []).append(time.perf_counter() - t0)
                if not ok:
                    errs[name] = errs.get(name, 0) + 1
                    with lock:
                        if len(samples) < 5:
                            samples.append(
                                f"{name}: HTTP {status} {body[:120].decode(errors='replace')}"
                            )
        connection.close()
        with lock:
            for k, v in mine.items():
                lat.setdefault(k, []).extend(v)
            for k, v in errs.items():
                errors[k] = errors.get(k, 0) + v

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - start
    total = sum(len(v) for v in lat.values())
    return {
        "endpoints": _summ(lat, errors),
        "errors": sum(errors.values()),
        "error_samples": samples,
        "requests": total,
        "requests_per_s": round(total / wall, 1),
    }


def _baseline(base: str, cid: int, ids: list[int], n: int) -> dict[str, Any]:
    rng = random.Random(99)
    lat: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    connection = _Client(base)
    for _ in range(n):
        for name, path in _endpoints(cid, ids, rng):
            t0 = time.perf_counter()
            status, _body = connection.get(path)
            lat.setdefault(name, []).append(time.perf_counter() - t0)
            if status != 200:
                errors[name] = errors.get(name, 0) + 1
    connection.close()
    return _summ(lat, errors)


def _profile(url: str, cid: int, endpoint: str, ids: list[int]) -> list[str]:
    """cProfile of building one endpoint's answer in this thread, as on a cache miss: the
    version read, the route's builder with a read session, then validation and JSON
    serialisation by its response model (what the service caches)."""
    from layerforge.api.routes import campaigns as rc
    from layerforge.api.routes import candidates as rd
    from layerforge.api.schemas import CandidateDetail, CandidatePage, ParetoPublic
    from layerforge.storage import get_engine, read_data_version, session_scope

    lim = CONFIG["page_limit"]
    engine = get_engine(url)

    def call(i: int) -> None:  # a different candidate each time: nothing memoised helps
        candidate_id = ids[(len(ids) // 2 + i) % len(ids)]
        if endpoint == "candidate":
            read_data_version(engine, "candidate", candidate_id)
        else:
            read_data_version(engine, "campaign", cid)
        with session_scope(engine, readonly=True) as session:
            if endpoint == "candidate":
                data, model = rd.candidate_detail(session, candidate_id), CandidateDetail
            elif endpoint == "pareto":
                data, model = rc.pareto_answer(url, cid), ParetoPublic
            else:
                sort = "accuracy:mlp/mnist1d" if endpoint == "candidates_sorted" else None
                data = rd.candidate_page(
                    session, cid, status=None, sort=sort, order="desc", cursor=None, limit=lim
                )
                model = CandidatePage
            model.model_validate(data).model_dump_json()

    call(0)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(1, 6):
        call(i)
    prof.disable()
    wall = (time.perf_counter() - t0) / 5
    stats = pstats.Stats(prof, stream=io.StringIO()).stats  # type: ignore[attr-defined]  # pstats keeps its table untyped
    total = sum(v[2] for v in stats.values()) or 1.0
    root = str(Path(__file__).resolve().parents[1])
    ours, self_time = [], []
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.items():
        name = f"{'/'.join(Path(file).parts[-2:])}:{func}" if file != "~" else func
        self_time.append((tt, name))
        if file.startswith(root) and "/.venv/" not in file and "/benchmarks/" not in file:
            ours.append((ct, name))
    ours.sort(reverse=True)
    self_time.sort(reverse=True)
    return (
        [f"one {endpoint} request alone, in-process: {wall * 1e3:.0f} ms"]
        + [f"{n}: {ct / total:.0%} cumulative" for ct, n in ours[:10]]
        + [f"{n}: {tt / total:.0%} self" for tt, n in self_time[:8]]
    )


def _layerforge(command: str) -> list[str]:
    exe = Path(sys.executable).with_name("layerforge")
    return (
        [str(exe), command] if exe.exists() else [sys.executable, "-m", "layerforge.cli", command]
    )


def _serve_and_load(
    url: str,
    tmp: str,
    cid: int,
    ids: list[int],
    clients: int,
    seconds: float,
    simulated_seconds: float,
    baseline_requests: int,
    split: bool = False,
) -> dict[str, Any]:
    """Start ``layerforge serve`` on ``url``, measure the single-client baseline (when
    ``baseline_requests``), submit the background campaign (each simulated evaluation taking
    ``simulated_seconds``), run the concurrent clients, cancel the background campaign and
    stop the server. ``split`` runs the campaign in a ``layerforge controller`` process beside
    a service started with ``LAYERFORGE_RUN_CONTROLLER=false``; otherwise the service's own
    controller runs it."""
    import httpx

    port = _free_port()
    env = {
        **os.environ,
        "LAYERFORGE_DATABASE_URL": url,
        "LAYERFORGE_PORT": str(port),
        "LAYERFORGE_HOST": "127.0.0.1",
        "LAYERFORGE_EVALUATOR": "simulated",
        "LAYERFORGE_SIMULATED_SECONDS": str(simulated_seconds),
        "LAYERFORGE_RUN_CONTROLLER": "false" if split else "true",
    }
    env.pop("LAYERFORGE_API_TOKEN", None)
    name = f"{'split' if split else 'serve'}-{simulated_seconds}"
    log_path = Path(tmp) / f"server-{name}.log"
    log = open(log_path, "w")
    server = subprocess.Popen(_layerforge("serve"), env=env, stdout=log, stderr=subprocess.STDOUT)
    controller = None
    if split:
        controller = subprocess.Popen(
            _layerforge("controller"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.3)
        baseline = _baseline(base, cid, ids, baseline_requests) if baseline_requests else {}
        r = httpx.post(f"{base}/api/v1/campaigns", json=CONFIG["background_spec"], timeout=30)
        if r.status_code not in (200, 201, 202):
            raise RuntimeError(f"background campaign not accepted: {r.status_code} {r.text[:300]}")
        bg_id = r.json().get("id")
        deadline = time.time() + 30
        while True:  # until the controller has taken the campaign up and is storing results
            time.sleep(1.0)
            bg_start = httpx.get(f"{base}/api/v1/campaigns/{bg_id}", timeout=30).json()
            if sum((bg_start.get("counts") or {}).values()) > 0 or time.time() > deadline:
                break
        loaded = _load(base, cid, ids, clients, seconds)
        bg = httpx.get(f"{base}/api/v1/campaigns/{bg_id}", timeout=30).json()
        stored = sum((bg.get("counts") or {}).values()) - sum(
            (bg_start.get("counts") or {}).values()
        )
        bg_info = {
            "status": bg.get("status"),
            "error": bg.get("error"),
            "counts": bg.get("counts"),
            "simulated_seconds_per_evaluation": simulated_seconds,
            "candidates_per_s_during_load": round(stored / seconds, 1),
        }
        httpx.post(f"{base}/api/v1/campaigns/{bg_id}/cancel", timeout=30)
    finally:
        for process in (controller, server):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    return {"loaded": loaded, "baseline": baseline, "background": bg_info}


def _met(loaded: dict[str, Any]) -> bool:
    return loaded["errors"] == 0 and all(
        (v["p99_ms"] or 0) <= CONFIG["p99_goal_ms"] for v in loaded["endpoints"].values()
    )


def _worst(endpoints: dict[str, dict[str, Any]]) -> str:
    return max(endpoints, key=lambda k: endpoints[k]["p99_ms"] or 0)


def _variant(result: dict[str, Any]) -> dict[str, Any]:
    loaded = result["loaded"]
    return {
        "endpoints": loaded["endpoints"],
        "requests_per_s": loaded["requests_per_s"],
        "errors": loaded["errors"],
        "error_samples": loaded["error_samples"],
        "background_campaign": result["background"],
        "met": _met(loaded),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Fill the database, then measure three layouts; returns the result.

    Judged: the background campaign at a cluster's pace in a ``layerforge controller`` process
    beside the service (the docker-compose layout). Reported beside it: the same pace with the
    controller inside the service (``make serve``, the embedded default), and that service
    with its controller flat out (a stress figure).
    """
    n = CONFIG["quick_candidates"] if quick else CONFIG["candidates"]
    clients = CONFIG["quick_clients"] if quick else CONFIG["clients"]
    seconds = CONFIG["quick_seconds"] if quick else CONFIG["seconds"]
    pace_s = round(CONFIG["background_spec"]["parallelism"] / CONFIG["cluster_candidates_per_s"], 4)
    with tempfile.TemporaryDirectory(prefix="lf-api-load-") as tmp:
        url = f"sqlite:///{tmp}/load.db"
        t0 = time.perf_counter()
        cid = _fill(url, n)
        fill_s = time.perf_counter() - t0
        from sqlalchemy import create_engine, text

        eng = create_engine(url)
        with eng.connect() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    text("SELECT id FROM candidate WHERE campaign_id = :c"), {"c": cid}
                )
            ]
        eng.dispose()
        split = _serve_and_load(
            url,
            tmp,
            cid,
            ids,
            clients,
            seconds,
            pace_s,
            3 if quick else CONFIG["baseline_requests"],
            split=True,
        )
        # each server warms up with a few single-client rounds first (the first Pareto answer
        # of a fresh process is built, not served), as the judged run's baseline does
        together = _serve_and_load(url, tmp, cid, ids, clients, seconds, pace_s, 3)
        flat = _serve_and_load(url, tmp, cid, ids, clients, seconds, 0.0, 3)
        loaded, baseline = split["loaded"], split["baseline"]
        eps = loaded["endpoints"]
        worst = _worst(eps)
        met = _met(loaded)
        profile = None if met else _profile(url, cid, worst, ids)
        for k, v in eps.items():
            b = baseline.get(k, {})
            if b.get("p99_ms"):
                v["p99_ratio_to_single_client"] = round(v["p99_ms"] / b["p99_ms"], 2)
    variants = {
        "controller_in_service_paced": _variant(together),
        "controller_in_service_flat_out": _variant(flat),
    }
    summary = {
        name: f"worst p99 {v['endpoints'][_worst(v['endpoints'])]['p99_ms']} ms "
        f"({_worst(v['endpoints'])}) at {v['requests_per_s']} requests/s, "
        f"{v['errors']} errors"
        for name, v in variants.items()
    }
    return {
        "name": "api_load",
        "goal": GOAL,
        "met": met,
        "figures": {
            "headline": {
                **{f"{k} p99 ms": v["p99_ms"] for k, v in eps.items()},
                "errors": loaded["errors"],
                "requests/s": loaded["requests_per_s"],
                **{
                    f"{name}: worst p99 ms": v["endpoints"][_worst(v["endpoints"])]["p99_ms"]
                    for name, v in variants.items()
                },
            },
            "endpoints": eps,
            "single_client_baseline": baseline,
            "requests": loaded["requests"],
            "requests_per_s": loaded["requests_per_s"],
            "errors": loaded["errors"],
            "error_samples": loaded["error_samples"],
            "stored_candidates": len(ids),
            "fill_seconds": round(fill_s, 1),
            "background_campaign": split["background"],
            "profile_of_slowest": profile,
            "slowest_endpoint": worst,
            **variants,
        },
        "note": (
            (
                "met"
                if met
                else f"slowest endpoint: {worst} (p99 {eps[worst]['p99_ms']} ms); "
                "see profile_of_slowest"
            )
            + ". Judged on the docker-compose layout: the background campaign runs in a "
            "`layerforge controller` process beside `layerforge serve` "
            "(LAYERFORGE_RUN_CONTROLLER=false), at a cluster's pace: "
            f"{CONFIG['cluster_candidates_per_s']:g} candidates/s, 10,000 workers at one "
            "minute per evaluation (benchmark 4's scale), each simulated evaluation taking "
            f"{pace_s:.3f} s with {CONFIG['background_spec']['parallelism']} in flight; "
            "it stored "
            f"{split['background']['candidates_per_s_during_load']} candidates/s during "
            "the load (its own proposals, new normact graphs in a saturating space, "
            "are the limit on this machine). "
            "With the controller inside the service (`make serve`): "
            f"{summary['controller_in_service_paced']}; flat out (zero-second "
            f"evaluations): {summary['controller_in_service_flat_out']}. "
            "The stored campaign was filled by simulated workers that, like the real "
            "ones, return each candidate's LaTeX with its result. The clients use "
            "keep-alive http.client connections (about 0.2 ms of CPU per request) and "
            "share the machine's 2 cores with the server."
        ),
        "config": {
            **CONFIG,
            "quick": quick,
            "clients_used": clients,
            "seconds_used": seconds,
            "candidates_used": n,
        },
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=True), indent=1, default=str)[:8000])
