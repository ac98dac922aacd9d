"""``layerforge.run``: run a campaign in this process and read what it found.

The campaign is stored in a database like any other (``database``: a SQLAlchemy URL or a
SQLite file path; default ``LAYERFORGE_DATABASE_URL``, i.e. ``./layerforge.db``), under a key
made from its spec: running the same spec again on the same database resumes the campaign
where it stopped (or returns the finished one) instead of starting over. Change ``name``
or ``seed`` to start another. An interrupt (Ctrl-C, a notebook's stop button) stops the
campaign cleanly; its result says ``stopped`` and a later run resumes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerforge.errors import LayerforgeError
from layerforge.specs import validate

if TYPE_CHECKING:
    from layerforge.api.settings import Settings
    from layerforge.grammar import Graph
    from layerforge.search.campaign import Progress
    from layerforge.search.evaluators import Evaluator
    from layerforge.search.spec import CampaignSpec

EVALUATORS = ("ray", "local", "simulated")


@dataclass(frozen=True)
class Point:
    """A candidate with its objective values (NaN where it has none), as a Pareto front or
    the best of an objective shows it."""

    candidate_id: int
    text: str
    origin: str
    values: dict[str, float]


@dataclass(frozen=True)
class CandidateRow:
    """One candidate of a campaign: its id, order (``seq``), status (``completed``,
    ``rejected``, ``failed``, ``duplicate`` ...), how it was made (``origin``), its text,
    size, parents and objective values."""

    id: int
    seq: int
    status: str
    origin: str
    text: str
    num_nodes: int
    parent_ids: list[int]
    objectives: dict[str, float] = field(default_factory=dict)


class CampaignResult:
    """What a campaign found, read from its database: the front, the candidates, the best
    per objective, and any candidate as code, a graph or a PyTorch module.

    ``status`` is how the run ended (``completed``, ``paused``, ``cancelled``, ``failed``,
    or ``stopped`` when it was interrupted: run it again to resume). Every property reads
    the database when called, so it shows the campaign as it is now.
    """

    def __init__(self, database_url: str, campaign_id: int, status: str):
        self.database_url = database_url
        self.campaign_id = campaign_id
        self.status = status

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n) or "no candidates"
        best = ", ".join(
            f"{name} {point.values[name]:.4g} ({point.text})" for name, point in self.best.items()
        )
        return (
            f"<CampaignResult campaign {self.campaign_id} {self.name!r}: {self.status}; "
            f"{counts}; best: {best or '-'}>"
        )

    # ------------------------------------------------------------ reading
    def _session(self):
        from layerforge.storage import get_engine, session_scope

        return session_scope(get_engine(self.database_url), readonly=True)

    @property
    def spec(self) -> CampaignSpec:
        """The campaign's spec, with every default filled in."""
        from layerforge.search.spec import CampaignSpec
        from layerforge.storage import repository as repo

        with self._session() as s:
            return CampaignSpec.model_validate(
                repo.get_campaign(s, campaign_id=self.campaign_id).spec
            )

    @property
    def name(self) -> str:
        """The campaign's name."""
        from layerforge.storage import repository as repo

        with self._session() as s:
            return repo.get_campaign(s, campaign_id=self.campaign_id).name

    @property
    def objectives(self) -> list[dict[str, Any]]:
        """The objectives: ``{"name": "accuracy:mlp/mnist1d", "maximize": True}``, ..."""
        return self._pareto()["objectives"]

    @property
    def counts(self) -> dict[str, int]:
        """Candidates per status."""
        from layerforge.storage import repository as repo

        with self._session() as s:
            return repo.count_candidates(s, campaign_id=self.campaign_id)

    def _pareto(self) -> dict[str, Any]:
        from layerforge.search.queries import pareto_of_campaign

        return pareto_of_campaign(self.database_url, self.campaign_id)

    @property
    def front(self) -> list[Point]:
        """The Pareto front: the candidates no other candidate beats on every objective,
        best first on the first objective."""
        data = self._pareto()
        first = data["objectives"][0]
        points = [_point(p) for p in data["front"]]
        return sorted(points, key=lambda p: _rank(p.values.get(first["name"]), first["maximize"]))

    @property
    def dominated(self) -> list[Point]:
        """The evaluated candidates that are not on the front."""
        return [_point(p) for p in self._pareto()["dominated"]]

    @property
    def best(self) -> dict[str, Point]:
        """The best evaluated candidate per objective (highest accuracy, lowest cost)."""
        data = self._pareto()
        points = [_point(p) for p in data["front"] + data["dominated"]]
        best: dict[str, Point] = {}
        for objective in data["objectives"]:
            name, maximize = objective["name"], objective["maximize"]
            finite = [p for p in points if _finite(p.values.get(name))]
            if finite:
                best[name] = min(
                    finite, key=lambda p: (_rank(p.values[name], maximize), p.candidate_id)
                )
        return best

    @property
    def candidates(self) -> list[CandidateRow]:
        """Every candidate of the campaign, in the order they were proposed."""
        from layerforge.storage import decode_float
        from layerforge.storage import repository as repo

        rows: list[CandidateRow] = []
        after: int | None = None
        with self._session() as s:
            while True:
                page = repo.list_candidates(
                    s, campaign_id=self.campaign_id, after=after, limit=1000, load_graphs=False
                )
                for c in page:
                    rows.append(
                        CandidateRow(
                            id=c.id,
                            seq=c.seq,
                            status=c.status,
                            origin=c.origin,
                            text=c.text,
                            num_nodes=c.num_nodes,
                            parent_ids=list(c.parent_ids or []),
                            objectives={
                                v.name: decode_float(v.value, v.value_kind)
                                for v in c.objective_values
                            },
                        )
                    )
                if len(page) < 1000:
                    return sorted(rows, key=lambda r: r.seq)
                after = page[-1].id

    @property
    def hypervolume(self) -> float | None:
        """The latest hypervolume of the front (None before the first evaluation)."""
        from layerforge.storage import repository as repo

        with self._session() as s:
            points = repo.list_hypervolume(s, campaign_id=self.campaign_id)
        return float(points[-1].hypervolume) if points else None

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        """Everything stored about one candidate of this campaign: status, text, graph,
        objective values, evaluations (with their results) and rejection stage and reason."""
        from layerforge.storage import repository as repo

        with self._session() as s:
            record = repo.read_candidate(s, candidate_id=self._own(candidate_id))
            c, rejection = record.candidate, record.rejection
            return {
                "id": c.id,
                "status": c.status,
                "origin": c.origin,
                "text": c.text,
                "graph": c.graph,
                "objectives": dict(record.objectives),
                "evaluations": [
                    {"kind": e.kind, "seed": e.seed, "status": e.status, "result": e.result}
                    for e in record.evaluations
                ],
                "rejection": None
                if rejection is None
                else {"stage": rejection.stage, "reason": rejection.reason},
                "duplicate_of": c.duplicate_of,
            }

    def _own(self, candidate_id: int) -> int:
        from layerforge.storage import repository as repo

        with self._session() as s:
            candidate = repo.get_candidate(s, candidate_id=int(candidate_id))
            if candidate.campaign_id != self.campaign_id:
                raise LayerforgeError(
                    f"candidate {candidate_id} belongs to campaign {candidate.campaign_id}, "
                    f"not to campaign {self.campaign_id}"
                )
        return int(candidate_id)

    # ------------------------------------------------------------ layers
    def _choose(self, candidate: int | None, objective: str | None) -> int:
        if candidate is not None:
            return self._own(candidate)
        objectives = self.objectives
        names = [o["name"] for o in objectives]
        if objective is not None and objective not in names:
            raise LayerforgeError(
                f"{objective!r} is not an objective of campaign {self.campaign_id} "
                f"(one of: {', '.join(names)})"
            )
        best = self.best
        name = objective or names[0]
        if name not in best:
            counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n) or "none"
            raise LayerforgeError(
                f"campaign {self.campaign_id} has no evaluated candidate to choose from yet "
                f"(its candidates: {counts})"
            )
        return best[name].candidate_id

    def graph(self, candidate: int | None = None, *, objective: str | None = None) -> Graph:
        """A candidate's graph (default: the best on ``objective``, else the first
        objective)."""
        from layerforge.grammar import Graph
        from layerforge.storage import repository as repo

        candidate_id = self._choose(candidate, objective)
        with self._session() as s:
            return Graph.from_dict(repo.get_candidate(s, candidate_id=candidate_id).graph)

    def compile(
        self,
        candidate: int | None = None,
        *,
        objective: str | None = None,
        num_features: int | None = None,
    ):
        """A candidate as a ``torch.nn.Module`` (a norm-act layer needs ``num_features``)."""
        from layerforge.grammar import compile_graph

        graph = self.graph(candidate, objective=objective)
        if graph.space == "normact":
            if num_features is None:
                raise LayerforgeError("a norm-act layer needs num_features (its channels)")
            return compile_graph(graph, num_features)
        return compile_graph(graph)

    def export(
        self,
        candidate: int | None = None,
        format: str = "pytorch",
        *,
        objective: str | None = None,
        path: str | Path | None = None,
        name: str | None = None,
    ) -> str:
        """A candidate as code: ``pytorch`` (a module that needs only torch), ``numpy``,
        ``jax``, ``latex``, ``sympy`` or ``json``; default the best on ``objective`` (else
        the first objective). Also written to ``path`` when given."""
        from layerforge.grammar import export

        text = export(self.graph(candidate, objective=objective), format, name)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _point(data: dict[str, Any]) -> Point:
    return Point(
        candidate_id=int(data["candidate_id"]),
        text=str(data.get("text", "")),
        origin=str(data.get("origin", "")),
        values={k: (math.nan if v is None else float(v)) for k, v in data["values"].items()},
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _rank(value: float | None, maximize: bool) -> float:
    """Sort key: smaller is better; missing and NaN last."""
    if value is None or math.isnan(value):
        return math.inf
    return -value if maximize else value


# ---------------------------------------------------------------- running


def database_url(database: str | Path | None, settings_url: str) -> str:
    """A SQLAlchemy URL from ``database``: a URL as it is, a file path as a SQLite URL,
    None as the setting (LAYERFORGE_DATABASE_URL)."""
    if database is None:
        return settings_url
    text = str(database)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def make_evaluator(kind: str, settings: Settings, workers: int | None = None) -> Evaluator:
    """The evaluator ``kind`` names: ``ray`` (local Ray, or the cluster at RAY_ADDRESS),
    ``local`` (in this process, no Ray) or ``simulated`` (scores from each function's
    fingerprint, no training). Ray is connected through the process's one owner thread."""
    from layerforge.search.evaluators import LocalEvaluator, RayEvaluator, SimulatedEvaluator

    if kind == "local":
        return LocalEvaluator()
    if kind == "simulated":
        return SimulatedEvaluator(seconds=settings.simulated_seconds)
    if kind == "ray":
        from layerforge.workers.pool import ray_connect

        ray_connect(settings.ray_address)
        return RayEvaluator(
            num_actors=workers or settings.workers,
            num_cpus=settings.worker_cpus,
            num_gpus=settings.worker_gpus,
            task_timeout_s=settings.task_timeout_s,
            ray_address=settings.ray_address,
        )
    raise LayerforgeError(f"evaluator must be one of {', '.join(EVALUATORS)}, not {kind!r}")


def campaign_key(spec: CampaignSpec) -> str:
    """The idempotency key of a locally run spec: equal specs (defaults filled in) share
    one campaign, so running one again resumes it."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return "run:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def run(
    spec: Any,
    database: str | Path | None = None,
    evaluator: str | Evaluator | None = None,
    progress: bool | Callable[[Progress], None] = True,
    *,
    workers: int | None = None,
    stop: threading.Event | None = None,
) -> CampaignResult:
    """Run a campaign here until it ends, and return its :class:`CampaignResult`.

    ``spec``: a dict, a path to a JSON or YAML file, or a CampaignSpec; a bad one raises
    :class:`~layerforge.errors.SpecError` naming every bad field, as the API's 422 does, and
    stores nothing. ``database``: a SQLAlchemy URL or a SQLite file path (default
    LAYERFORGE_DATABASE_URL). ``evaluator``: ``ray``, ``local``, ``simulated`` or an
    evaluator object (default LAYERFORGE_EVALUATOR, i.e. ``ray``); ``workers``: Ray actors
    (default LAYERFORGE_WORKERS). ``progress``: a progress bar on stderr, or a callable that
    receives each :class:`layerforge.search.campaign.Progress`. ``stop``: an event that ends
    the run cleanly when set; without one, an interrupt (SIGINT) in the main thread does.
    With LAYERFORGE_MLFLOW_TRACKING_URI set, the campaign is mirrored to MLflow as the
    service mirrors its campaigns (:mod:`layerforge.integrations.mlflow`).
    """
    from layerforge.api.app import mlflow_observer
    from layerforge.api.settings import load_settings
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.queries import create_campaign
    from layerforge.storage import upgrade_database

    model = validate(spec)
    overrides: dict[str, Any] = {}
    if database is not None:
        overrides["database_url"] = database_url(database, "")
    if isinstance(evaluator, str):
        if evaluator not in EVALUATORS:
            raise LayerforgeError(
                f"evaluator must be one of {', '.join(EVALUATORS)}, not {evaluator!r}"
            )
        overrides["evaluator"] = evaluator
    settings = load_settings(**overrides)
    url = settings.database_url
    upgrade_database(url)
    campaign_id = create_campaign(url, model, idempotency_key=campaign_key(model))
    observer = mlflow_observer(settings)
    engine = (
        make_evaluator(settings.evaluator, settings, workers)
        if evaluator is None or isinstance(evaluator, str)
        else evaluator
    )
    owns_engine = engine is not evaluator
    stop_event = stop or threading.Event()
    bar = _ProgressBar(model) if progress is True else None
    listeners: list[Callable[[Progress], None]] = []
    if bar is not None:
        listeners.append(bar.update)
    elif callable(progress):
        listeners.append(progress)
    if observer is not None:
        listeners.append(observer.on_progress)

    def report(state: Progress) -> None:
        for listener in listeners:
            listener(state)

    previous = _interrupt_sets(stop_event) if stop is None else None
    try:
        if bar is not None:
            bar.start(campaign_id)
        runner = CampaignRunner(
            url, campaign_id, engine, stop=stop_event, on_progress=report if listeners else None
        )
        status = runner.run()
    finally:
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if observer is not None:
            observer.close()
        if owns_engine:
            engine.shutdown()
    return CampaignResult(url, campaign_id, status)


def _interrupt_sets(stop: threading.Event) -> Any:
    """In the main thread, make SIGINT set ``stop`` (returns the handler to restore)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: stop.set())


class _ProgressBar:
    """A rich progress bar on stderr: candidates against the budget, the funnel, the best
    values and the hypervolume."""

    def __init__(self, spec: CampaignSpec):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.spec = spec
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task: Any = None

    def start(self, campaign_id: int) -> None:
        spec = self.spec
        self.console.print(
            f"campaign {campaign_id} ({spec.name}): {spec.space.kind} space, "
            f"{spec.strategy.name}, budget {spec.budget.max_candidates} candidates"
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "candidates", total=spec.budget.max_candidates, detail=""
        )

    def update(self, state: Progress) -> None:
        self.progress.update(self.task, completed=state.candidates, detail=describe(state))

    def close(self) -> None:
        self.progress.stop()


def describe(state: Progress) -> str:
    """One line for a progress report: completed, rejections per stage, best values, HV."""
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(state.funnel.items())) or "none"
    best = ", ".join(f"{k.split(':')[-1]} {v:.3f}" for k, v in state.best.items())
    return (
        f"done {state.counts.get('completed', 0)} | rejected: {rejected} | "
        f"best: {best or '-'} | HV {state.hypervolume:.4f}"
    )
