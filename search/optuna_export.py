"""A campaign as a multi-objective Optuna study, readable by ``optuna.load_study``,
``optuna.visualization`` and optuna-dashboard.

Two halves, so that the service never writes into a storage a user names:

* :func:`study_document` (server side) reads a campaign's evaluated candidates into a
  JSON document: the study's directions and one trial per candidate;
* :func:`write_study` (client side, or the service writing a SQLite file it returns)
  creates the study in an Optuna storage from that document.

One trial per evaluated candidate (duplicates of a function are its original's trial):

* state: ``completed`` -> COMPLETE, ``rejected`` (stopped early by the rejection
  protocol) -> PRUNED, ``failed`` -> FAIL; candidates still running are left out;
* values: the objectives as measured (accuracies maximized, costs minimized);
* params: the candidate's text (a categorical over every exported text, while there are at
  most :data:`TEXT_PARAM_LIMIT`: Optuna stores the choices with every trial), its origin,
  its number of nodes and the count of each op in its graph, so parameter importances and
  slices say which ops matter;
* user attrs: text, LaTeX, fingerprint, status, origin, candidate id and parent ids.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

#: Above this many trials the candidate's text is a user attribute only, not a parameter.
TEXT_PARAM_LIMIT = 500
#: The states a candidate's status exports to; other statuses are not exported.
STATES = {"completed": "COMPLETE", "rejected": "PRUNED", "stopped": "PRUNED", "failed": "FAIL"}


def default_study_name(campaign_id: int) -> str:
    """The study name an export uses unless told another."""
    return f"layerforge-campaign-{int(campaign_id)}"


def _op_counts(graph: dict[str, Any]) -> Counter[str]:
    return Counter(
        str(node.get("op"))
        for node in graph.get("nodes", [])
        if node.get("op") not in (None, "x", "const", "param")
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def study_document(session: Any, campaign_id: int) -> dict[str, Any]:
    """The campaign ``campaign_id`` as a study document (NotFoundError when it does not
    exist). The LaTeX is the one the workers stored with the result; it is computed here
    only for completed candidates that lack it (SymPy takes milliseconds a formula)."""
    from layerforge.grammar import formula_latex
    from layerforge.search.objectives import campaign_objectives
    from layerforge.search.spec import CampaignSpec
    from layerforge.storage import repository as repo

    campaign = repo.get_campaign(session, campaign_id=campaign_id)
    objectives = campaign_objectives(CampaignSpec.model_validate(campaign.spec))
    names = [o.name for o in objectives]
    ids, table = repo.objective_table(session, campaign_id=campaign_id, names=names)
    values = dict(zip(ids, table))
    latex: dict[int, str] = {}
    for evaluation in repo.completed_evaluations(session, campaign_id=campaign_id, kind="search"):
        result = evaluation.result
        if isinstance(result, dict) and isinstance(result.get("latex"), str):
            latex.setdefault(evaluation.candidate_id, result["latex"])
    candidates = [
        c for c in repo.all_candidates(session, campaign_id=campaign_id) if c.status in STATES
    ]
    ops = sorted({op for c in candidates for op in _op_counts(c.graph or {})})
    texts = list(dict.fromkeys(c.text for c in candidates))
    text_param = len(candidates) <= TEXT_PARAM_LIMIT
    distributions: dict[str, Any] = {
        "origin": {
            "name": "CategoricalDistribution",
            "attributes": {"choices": sorted({c.origin for c in candidates})},
        },
        "nodes": {
            "name": "IntDistribution",
            "attributes": {
                "low": min((c.num_nodes for c in candidates), default=0),
                "high": max((c.num_nodes for c in candidates), default=0),
                "log": False,
                "step": 1,
            },
        },
    }
    if text_param:
        distributions["text"] = {
            "name": "CategoricalDistribution",
            "attributes": {"choices": texts},
        }
    if not candidates:
        # nothing evaluated yet: an empty study (a categorical needs at least one choice)
        distributions = {}
    counts = {c.id: _op_counts(c.graph or {}) for c in candidates}
    for op in ops:
        high = max(count[op] for count in counts.values())
        distributions[f"op:{op}"] = {
            "name": "IntDistribution",
            "attributes": {"low": 0, "high": high, "log": False, "step": 1},
        }
    trials = []
    for candidate in candidates:
        state = STATES[candidate.status]
        row = values.get(candidate.id)
        trial_values = [_finite(v) for v in row] if state == "COMPLETE" and row else None
        if state == "COMPLETE" and (trial_values is None or None in trial_values):
            state, trial_values = "FAIL", None  # no values (or a NaN): nothing to rank
        text_latex = latex.get(candidate.id)
        if text_latex is None and state == "COMPLETE":
            try:
                text_latex = formula_latex(candidate.graph)
            except Exception:  # noqa: BLE001 - a graph SymPy cannot express: no LaTeX
                text_latex = None
        params: dict[str, Any] = {"origin": candidate.origin, "nodes": candidate.num_nodes}
        if text_param:
            params["text"] = candidate.text
        params.update({f"op:{op}": counts[candidate.id][op] for op in ops})
        trials.append(
            {
                "state": state,
                "values": trial_values,
                "params": params,
                "user_attrs": {
                    "candidate_id": candidate.id,
                    "text": candidate.text,
                    "latex": text_latex,
                    "fingerprint": candidate.fingerprint,
                    "status": candidate.status,
                    "origin": candidate.origin,
                    "parent_ids": list(candidate.parent_ids or []),
                },
                "datetime_start": candidate.created_at.isoformat(),
                "datetime_complete": candidate.updated_at.isoformat(),
            }
        )
    return {
        "campaign_id": campaign_id,
        "study_name": default_study_name(campaign_id),
        "objectives": names,
        "directions": ["maximize" if o.maximize else "minimize" for o in objectives],
        "distributions": distributions,
        "text_param": text_param,
        "trials": trials,
    }


def write_study(document: dict[str, Any], storage: str, study_name: str | None = None):
    """Create the study of ``document`` in the Optuna storage URL ``storage`` (``sqlite:///
    file.db``, ``postgresql://...``) and return it. ValueError when the URL is not a storage
    Optuna can open or the study name is taken there (nothing is written then)."""
    import datetime as dt

    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState, create_trial

    name = study_name or document["study_name"]
    try:
        rdb = optuna.storages.RDBStorage(storage)
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's and Optuna's errors vary by URL
        raise ValueError(f"cannot open the Optuna storage {storage!r}: {err}") from None
    try:
        study = optuna.create_study(
            storage=rdb, study_name=name, directions=list(document["directions"])
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ValueError(
            f"the storage {storage!r} already has a study {name!r}; choose another --study"
        ) from None
    study.set_user_attr("campaign_id", document["campaign_id"])
    study.set_user_attr("objectives", document["objectives"])
    distributions = {
        key: json_to_distribution(_distribution_json(value))
        for key, value in document["distributions"].items()
    }
    trials = []
    for trial in document["trials"]:
        state = TrialState[trial["state"]]
        trials.append(
            create_trial(
                state=state,
                values=trial["values"] if state == TrialState.COMPLETE else None,
                params=trial["params"],
                distributions={k: distributions[k] for k in trial["params"]},
                user_attrs=trial["user_attrs"],
            )
        )
        start, complete = trial.get("datetime_start"), trial.get("datetime_complete")
        if start:
            trials[-1].datetime_start = dt.datetime.fromisoformat(start)
        if complete:
            trials[-1].datetime_complete = dt.datetime.fromisoformat(complete)
    study.add_trials(trials)
    return study


def _distribution_json(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value)
