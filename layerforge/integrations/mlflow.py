"""Campaigns logged to MLflow: one run per campaign, one nested run per completed candidate.

Set ``LAYERFORGE_MLFLOW_TRACKING_URI`` (and ``pip install 'layerforge[mlflow]'``) and the
service, ``layerforge controller`` and ``layerforge run`` mirror every campaign they run:

- the campaign's run (experiment ``layerforge``, named after the campaign): its spec as
  params (``space.kind``, ``proxies.0.arch``, ...), the hypervolume after each evaluation
  (``hypervolume`` and ``hypervolume_normalized``, step = evaluations), the best value of each
  objective (``best.<objective>``), tags naming the campaign id, the database and the
  layerforge version; it ends FINISHED, KILLED or FAILED with the campaign;
- a nested run per completed candidate: its objective values as metrics, its text, origin
  and size as params, its LaTeX formula as the ``formula`` tag, and its exported PyTorch code
  (with the provenance header) as the artifact ``layer.py``.

The mirror is rebuilt from the database, never from memory: :meth:`MlflowLogger.sync` reads
what the campaign has stored and logs what MLflow does not hold yet, so it can run after a
crash, twice, or from another process without logging anything twice. The campaign loop
only drops a campaign id into a queue (:meth:`MlflowLogger.on_progress`); a background
thread gathers the requests of ``min_interval_s`` into one sync per campaign, and syncs at
once when a campaign ends.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from layerforge.storage import CampaignStatus, CandidateStatus, get_engine, session_scope
from layerforge.storage import repository as repo

log = logging.getLogger(__name__)

EXPERIMENT = "layerforge"
FINISHED_STATUS: dict[str, str] = {
    CampaignStatus.COMPLETED: "FINISHED",
    CampaignStatus.CANCELLED: "KILLED",
    CampaignStatus.FAILED: "FAILED",
}
_PAGE = 1000
_MAX_PARAM = 6000  # MLflow's limit on a param value
_MAX_TAG = 5000  # and on a tag value in every backend


def _client(tracking_uri: str):
    try:
        from mlflow import MlflowClient
    except ImportError as err:
        raise RuntimeError(
            "LAYERFORGE_MLFLOW_TRACKING_URI is set but MLflow is not installed: "
            "pip install 'layerforge[mlflow]'"
        ) from err
    return MlflowClient(tracking_uri=tracking_uri)


def database_label(database_url: str) -> str:
    """The database a campaign id belongs to, without any password (``user@host/db`` or the
    SQLite path): two databases logging to one MLflow experiment never mix their runs."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1@", database_url)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted.key, text)`` pairs of a nested spec (lists indexed: ``proxies.0.arch``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and any(isinstance(v, (Mapping, list)) for v in value):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{index}")
    else:
        text = value if isinstance(value, str) else repr(value)
        yield prefix, text[:_MAX_PARAM]


def _metric_key(name: str) -> str:
    return re.sub(r"[^\w\-. :/]", "_", name)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class MlflowLogger:
    """Mirrors layerforge campaigns in MLflow (see the module docstring)."""

    def __init__(
        self,
        database_url: str,
        tracking_uri: str,
        *,
        experiment: str = EXPERIMENT,
        min_interval_s: float = 2.0,
    ) -> None:
        self.database_url = database_url
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.min_interval_s = min_interval_s
        self.client = _client(tracking_uri)
        self._experiment_id: str | None = None
        self._runs: dict[int, str] = {}
        self._logged: dict[int, set[int]] = {}
        self._hv_step: dict[int, int] = {}
        self._queue: queue.Queue[tuple[int, bool] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the campaign loop's side
    def on_progress(self, progress: Any) -> None:
        """Progress callback of :class:`search.campaign.CampaignRunner`: schedule a sync of
        the campaign (never blocks the loop, never raises into it)."""
        finished = getattr(progress, "status", "") in FINISHED_STATUS
        self._queue.put((int(progress.campaign_id), finished))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="layerforge-mlflow", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pending = {item[0]: item[1]}
            stop = False
            # gather the requests of the next min_interval_s into one sync per campaign,
            # unless a campaign has ended: then sync at once
            deadline = time.monotonic() + self.min_interval_s
            while not any(pending.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                pending[more[0]] = pending.get(more[0], False) or more[1]
            for campaign_id in pending:
                self._sync_logged(campaign_id)
            if stop:
                return

    def _sync_logged(self, campaign_id: int) -> None:
        try:
            self.sync(campaign_id)
        except Exception:
            log.exception("could not log campaign %s to MLflow", campaign_id)

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued syncs, stop the background thread, and sync every campaign seen
        once more (a cancelled campaign sends no last progress report)."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout_s)
        for campaign_id in list(self._runs):
            self._sync_logged(campaign_id)

    # ------------------------------------------------------------------ sync from storage
    def experiment_id(self) -> str:
        """The experiment's id, created on first use."""
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(self.experiment)
            )
        return self._experiment_id

    def _tags(self, campaign_id: int) -> str:
        return (
            f"tags.layerforge_campaign_id = '{campaign_id}' and "
            f"tags.layerforge_database = '{database_label(self.database_url)}'"
        )

    def _campaign_run(self, campaign: Any) -> str:
        """The campaign's run id: found in MLflow, or created with the spec as params."""
        if campaign.id in self._runs:
            return self._runs[campaign.id]
        from mlflow.entities import Param

        found = self.client.search_runs(
            [self.experiment_id()],
            filter_string=self._tags(campaign.id) + " and tags.layerforge_kind = 'campaign'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            children = self.client.search_runs(
                [self.experiment_id()],
                filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
                max_results=50_000,
            )
            self._logged[campaign.id] = {
                int(r.data.tags["layerforge_candidate_id"])
                for r in children
                if "layerforge_candidate_id" in r.data.tags
            }
            history = self.client.get_metric_history(run_id, "hypervolume")
            self._hv_step[campaign.id] = max((m.step for m in history), default=-1)
        else:
            from layerforge.api import layerforge_version

            run = self.client.create_run(
                self.experiment_id(),
                run_name=f"{campaign.name} (campaign {campaign.id})",
                tags={
                    "layerforge_kind": "campaign",
                    "layerforge_campaign_id": str(campaign.id),
                    "layerforge_database": database_label(self.database_url),
                    "layerforge_version": layerforge_version(),
                    "space": campaign.space_kind,
                    "strategy": campaign.strategy,
                },
            )
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in flatten(campaign.spec or {}) if k]
            for start in range(0, len(params), 100):  # MLflow takes 100 params a batch
                self.client.log_batch(run_id, params=params[start : start + 100])
            self._logged[campaign.id] = set()
            self._hv_step[campaign.id] = -1
        self._runs[campaign.id] = run_id
        return run_id

    def sync(self, campaign_id: int) -> str:
        """Log what the campaign has stored and MLflow lacks; returns the campaign's run id."""
        from mlflow.entities import Metric

        from layerforge.api.routes.common import hypervolume_box, normalized

        engine = get_engine(self.database_url)
        with session_scope(engine, readonly=True) as s:
            campaign = repo.get_campaign(s, campaign_id=campaign_id)
            run_id = self._campaign_run(campaign)
            objectives: list[dict[str, Any]] = [
                {"name": str(o.get("name")), "maximize": bool(o.get("maximize"))}
                for o in campaign.objectives or []
            ]
            box = hypervolume_box(objectives, campaign.reference_point)
            metrics = []
            last = self._hv_step.get(campaign_id, -1)
            for point in repo.list_hypervolume(s, campaign_id=campaign_id):
                value = _finite(point.hypervolume)
                if point.evaluations <= last or value is None:
                    continue
                stamp = int(point.created_at.timestamp() * 1000) if point.created_at else 0
                metrics.append(Metric("hypervolume", value, stamp, point.evaluations))
                share = normalized(value, box)
                if share is not None:
                    metrics.append(
                        Metric("hypervolume_normalized", share, stamp, point.evaluations)
                    )
                last = point.evaluations
            completed = self._completed(s, campaign_id)
            status = campaign.status
        step = max(last, 0)
        now = int(time.time() * 1000)
        for objective in objectives:
            column = [
                v for c in completed if (v := c["objectives"].get(objective["name"])) is not None
            ]
            if column:
                best = max(column) if objective["maximize"] else min(column)
                metrics.append(Metric(_metric_key("best." + objective["name"]), best, now, step))
        for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a batch
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self._hv_step[campaign_id] = last
        for candidate in completed:
            if candidate["id"] not in self._logged[campaign_id]:
                self._log_candidate(run_id, campaign_id, candidate)
                self._logged[campaign_id].add(candidate["id"])
        self.client.set_tag(run_id, "status", status)
        if status in FINISHED_STATUS:
            self.client.set_terminated(run_id, FINISHED_STATUS[status])
        return run_id

    def _completed(self, session: Any, campaign_id: int) -> list[dict[str, Any]]:
        """The campaign's completed candidates not logged yet, with what their runs hold."""
        from layerforge.api.routes.candidates import export_provenance
        from layerforge.grammar import Graph, export, formula_latex, with_provenance
        from layerforge.storage import decode_float

        rows, after = [], None
        while True:
            page = repo.list_candidates(
                session,
                campaign_id=campaign_id,
                status=CandidateStatus.COMPLETED,
                after=after,
                limit=_PAGE,
            )
            rows += page
            if len(page) < _PAGE:
                break
            after = page[-1].id
        logged = self._logged.get(campaign_id, set())
        out = []
        for candidate in rows:
            values = {
                ov.name: _finite(decode_float(ov.value, ov.value_kind))
                for ov in candidate.objective_values
            }
            entry: dict[str, Any] = {"id": candidate.id, "objectives": values}
            if candidate.id not in logged:
                record = repo.read_candidate(session, candidate_id=candidate.id)
                graph = Graph.from_dict(candidate.graph)
                provenance = export_provenance(session, candidate.id, "pytorch")
                entry.update(
                    text=candidate.text,
                    origin=candidate.origin,
                    num_nodes=candidate.num_nodes,
                    parent_ids=list(candidate.parent_ids or []),
                    latex=_stored_latex(record.evaluations) or formula_latex(graph),
                    code=with_provenance(export(graph, "pytorch"), "pytorch", provenance),
                )
            out.append(entry)
        return out

    def _log_candidate(self, parent_run_id: str, campaign_id: int, candidate: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"candidate {candidate['id']}: {candidate['text']}"[:250],
            tags={
                "mlflow.parentRunId": parent_run_id,
                "layerforge_kind": "candidate",
                "layerforge_campaign_id": str(campaign_id),
                "layerforge_candidate_id": str(candidate["id"]),
                "layerforge_database": database_label(self.database_url),
            },
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[
                Metric(_metric_key(name), value, now, 0)
                for name, value in candidate["objectives"].items()
                if value is not None
            ],
            params=[
                Param("layer", candidate["text"][:_MAX_PARAM]),
                Param("origin", candidate["origin"]),
                Param("num_nodes", str(candidate["num_nodes"])),
                Param("parent_ids", ",".join(map(str, candidate["parent_ids"])) or "none"),
            ],
            tags=[RunTag("formula", (candidate["latex"] or "")[:_MAX_TAG])],
        )
        self.client.log_text(run_id, candidate["code"], "layer.py")
        self.client.set_terminated(run_id, "FINISHED")


def _stored_latex(evaluations: list[Any]) -> str | None:
    """The formula an evaluation worker stored with its result, if any."""
    for evaluation in evaluations:
        result = evaluation.result
        if isinstance(result, dict) and isinstance(result.get("latex"), str):
            return result["latex"]
    return None
