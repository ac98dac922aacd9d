"""The storage contract, run once on a SQLite file and once on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from sqlalchemy import inspect, text, update

from layerforge.storage import (
    ConflictError,
    NotFoundError,
    StorageError,
    current_revision,
    downgrade_database,
    get_engine,
    head_revision,
    read_data_version,
    session_scope,
    upgrade_database,
)
from layerforge.storage import (
    repository as repo,
)
from layerforge.storage.models import Candidate, Evaluation
from layerforge.storage.versions import DataVersion

TABLES = {
    "campaign",
    "candidate",
    "evaluation",
    "objective_value",
    "rejection",
    "hypervolume_point",
    "event",
}


@pytest.fixture
def engine(database_url):
    upgrade_database(database_url)
    return get_engine(database_url)


def make_campaign(session, **overrides):
    fields = dict(
        name="c",
        spec={"space": {"kind": "activation"}},
        space_kind="activation",
        strategy="evolution",
        objectives=["acc:mlp/mnist1d"],
        seed=3,
    )
    fields.update(overrides)
    return repo.create_campaign(session, **fields)


def make_candidate(session, campaign_id, fingerprint="f0", **overrides):
    fields = dict(
        campaign_id=campaign_id,
        graph={"space": "activation", "nodes": []},
        text="relu(x)",
        fingerprint=fingerprint,
        origin="seed",
    )
    fields.update(overrides)
    return repo.add_candidate(session, **fields)


def test_migrations_run_from_empty_to_head_and_back(database_url):
    assert current_revision(database_url) is None
    upgrade_database(database_url)
    assert current_revision(database_url) == head_revision()
    engine = get_engine(database_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    downgrade_database(database_url)
    assert current_revision(database_url) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade_database(database_url)
    upgrade_database(database_url)  # idempotent
    assert current_revision(database_url) == head_revision()


def test_every_model_round_trips(engine):
    with session_scope(engine) as s:
        campaign = make_campaign(s, reference_point=[0.0, 1.0], idempotency_key="k1")
        cand = make_candidate(
            s,
            campaign.id,
            canonical_key="relu",
            parent_ids=[],
            num_nodes=2,
            strategy_data={"params": {"u1": "tanh"}},
        )
        child = make_candidate(
            s, campaign.id, fingerprint="f1", parent_ids=[cand.id], origin="mutation"
        )
        ev = repo.add_evaluation(s, candidate_id=cand.id, kind="search", seed=0)
        repo.set_objective_values(s, candidate_id=cand.id, values={"acc": 0.5, "nodes": 2.0})
        repo.record_rejection(
            s, candidate_id=child.id, stage="probe", reason="constant output", cost_seconds=0.01
        )
        repo.add_hypervolume_point(s, campaign_id=campaign.id, evaluations=1, hypervolume=0.25)
        ids = (campaign.id, cand.id, child.id, ev.id)
    with session_scope(engine, readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=ids[0])
        assert campaign.spec == {"space": {"kind": "activation"}}
        assert campaign.reference_point == [0.0, 1.0]
        assert campaign.objectives == ["acc:mlp/mnist1d"]
        assert campaign.created_at.tzinfo is not None or engine.dialect.name == "sqlite"
        cand = repo.get_candidate(s, candidate_id=ids[1], full=True)
        assert cand.seq == 0 and cand.strategy_data == {"params": {"u1": "tanh"}}
        assert [e.id for e in cand.evaluations] == [ids[3]]
        assert {o.name for o in cand.objective_values} == {"acc", "nodes"}
        child = repo.get_candidate(s, candidate_id=ids[2], full=True)
        assert child.seq == 1 and child.parent_ids == [ids[1]]
        assert child.status == "rejected" and child.rejection.stage == "probe"
        assert [c.id for c in repo.lineage(s, candidate_id=ids[2])] == [ids[1]]
        assert [p.hypervolume for p in repo.list_hypervolume(s, campaign_id=ids[0])] == [0.25]
        assert [e.kind for e in repo.list_events(s, campaign_id=ids[0])] == ["created"]
        assert repo.find_campaign_by_idempotency_key(s, key="k1").id == ids[0]
        assert repo.rejection_funnel(s, campaign_id=ids[0])["probe"]["rejected"] == 1
        assert repo.count_candidates(s, campaign_id=ids[0])["rejected"] == 1
        assert repo.campaign_fingerprints(s, campaign_id=ids[0]) == {"f0", "f1"}


def test_lineage_walks_first_parents_nearest_first_and_stops_at_depth_and_loops(engine):
    with session_scope(engine) as s:
        cid = make_campaign(s).id
        ids = [make_candidate(s, cid, fingerprint="f0", text="x").id]
        for i in range(1, 60):  # a chain of 60: each candidate's first parent is the previous
            ids.append(
                make_candidate(
                    s,
                    cid,
                    fingerprint=f"f{i}",
                    text=f"t{i}",
                    origin="mutation",
                    parent_ids=[ids[-1], ids[0]],
                ).id
            )
        other = make_candidate(s, cid, fingerprint="other", parent_ids=[]).id
    with session_scope(engine, readonly=True) as s:
        chain = repo.lineage(s, candidate_id=ids[-1])
        assert [a.id for a in chain] == ids[-2::-1][:50]  # max_depth 50, nearest first
        assert (chain[0].text, chain[0].origin, chain[0].status) == ("t58", "mutation", "proposed")
        assert [a.id for a in repo.lineage(s, candidate_id=ids[3], max_depth=2)] == [ids[2], ids[1]]
        assert [a.id for a in repo.lineage(s, candidate_id=ids[2])] == [ids[1], ids[0]]
        assert repo.lineage(s, candidate_id=other) == []
        with pytest.raises(NotFoundError):
            repo.lineage(s, candidate_id=10**9)
    with session_scope(engine) as s:  # a damaged chain that loops back stops before the repeat
        s.execute(update(Candidate).where(Candidate.id == ids[0]).values(parent_ids=[ids[2]]))
    with session_scope(engine, readonly=True) as s:
        assert [a.id for a in repo.lineage(s, candidate_id=ids[2])] == [ids[1], ids[0]]


def test_the_fast_version_read_agrees_with_the_stored_row_and_follows_writes(engine):
    with session_scope(engine) as s:
        campaign_id = make_campaign(s).id
        candidate_id = make_candidate(s, campaign_id).id
    with session_scope(engine, readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        before = DataVersion(campaign.id, campaign.created_at, campaign.data_version)
    assert read_data_version(engine, "campaign", campaign_id) == before
    assert read_data_version(engine, "candidate", candidate_id) == before
    with session_scope(engine) as s:
        repo.set_candidate_status(s, candidate_id=candidate_id, status="running")
    after = read_data_version(engine, "candidate", candidate_id)
    assert after.counter > before.counter and after[:2] == before[:2]
    assert read_data_version(engine, "campaign", 10**9) is None
    assert read_data_version(engine, "candidate", 10**9) is None
    with pytest.raises(ValueError, match="scope"):
        read_data_version(engine, "evaluation", 1)


def test_non_finite_objective_values_are_stored_explicitly(engine):
    values = {"a": math.inf, "b": -math.inf, "c": math.nan, "d": -0.0, "e": 1e-300}
    with session_scope(engine) as s:
        cid = make_candidate(s, make_campaign(s).id).id
        repo.set_objective_values(s, candidate_id=cid, values=values)
    with session_scope(engine, readonly=True) as s:
        got = repo.get_objective_values(s, candidate_id=cid)
        kinds = {
            name: kind
            for name, kind in s.execute(
                text("SELECT name, value_kind FROM objective_value WHERE candidate_id = :c"),
                {"c": cid},
            )
        }
    assert got["a"] == math.inf and got["b"] == -math.inf and math.isnan(got["c"])
    assert got["d"] == 0.0 and got["e"] == 1e-300
    assert kinds == {"a": "+inf", "b": "-inf", "c": "nan", "d": "finite", "e": "finite"}


def test_json_payloads_with_non_finite_floats_survive(engine):
    with session_scope(engine) as s:
        cid = make_candidate(s, make_campaign(s).id).id
        eid = repo.add_evaluation(s, candidate_id=cid).id
        repo.finish_evaluation(
            s,
            evaluation_id=eid,
            status="completed",
            result={"loss": math.nan, "curve": [(0, math.inf)]},
        )
    with session_scope(engine, readonly=True) as s:
        assert s.get(Evaluation, eid).result == {"loss": "nan", "curve": [[0, "inf"]]}


def test_deleting_a_campaign_cascades_in_the_database(engine):
    with session_scope(engine) as s:
        kept = make_campaign(s, name="kept").id
        make_candidate(s, kept)
        gone = make_campaign(s, name="gone").id
        cid = make_candidate(s, gone).id
        repo.add_evaluation(s, candidate_id=cid)
        repo.set_objective_values(s, candidate_id=cid, values={"acc": 1.0})
        repo.record_rejection(
            s, candidate_id=make_candidate(s, gone, "f2").id, stage="static", reason="ignores x"
        )
        repo.add_hypervolume_point(s, campaign_id=gone, evaluations=1, hypervolume=1.0)
    with session_scope(engine) as s:  # plain SQL: the database itself must cascade
        s.execute(text("DELETE FROM campaign WHERE id = :id"), {"id": gone})
    with session_scope(engine, readonly=True) as s:
        for table in TABLES - {"campaign"}:
            rows = s.execute(
                text(f"SELECT count(*) FROM {table} WHERE campaign_id = :id"), {"id": gone}
            ).scalar()
            assert rows == 0, table
        assert repo.count_candidates(s, campaign_id=kept)["proposed"] == 1
    with session_scope(engine) as s:  # and through the ORM
        repo.delete_campaign(s, campaign_id=kept)
    with session_scope(engine, readonly=True) as s:
        assert s.execute(text("SELECT count(*) FROM candidate")).scalar() == 0


def test_an_evaluation_is_stored_once(engine):
    with session_scope(engine) as s:
        cid = make_candidate(s, make_campaign(s).id).id
        eid = repo.add_evaluation(s, candidate_id=cid, seed=0).id
    with pytest.raises(ConflictError), session_scope(engine) as s:
        repo.add_evaluation(s, candidate_id=cid, seed=0)
    with session_scope(engine) as s:
        repo.lease_evaluation(s, evaluation_id=eid, owner="a", lease_seconds=60)
    with pytest.raises(ConflictError), session_scope(engine) as s:
        repo.lease_evaluation(s, evaluation_id=eid, owner="b", lease_seconds=60)
    with session_scope(engine) as s:
        repo.finish_evaluation(s, evaluation_id=eid, status="completed", result={"acc": 0.9})
    with pytest.raises(ConflictError, match="already finished"), session_scope(engine) as s:
        repo.finish_evaluation(s, evaluation_id=eid, status="completed", result={"acc": 0.1})
    with session_scope(engine, readonly=True) as s:
        ev = s.get(Evaluation, eid)
        assert ev.result == {"acc": 0.9} and ev.attempts == 1


def test_expired_leases_are_requeued_and_live_ones_are_not(engine):
    with session_scope(engine) as s:
        campaign_id = make_campaign(s).id
        cid = make_candidate(s, campaign_id).id
        live = repo.add_evaluation(s, candidate_id=cid, seed=0).id
        dead = repo.add_evaluation(s, candidate_id=cid, seed=1).id
        repo.lease_evaluation(s, evaluation_id=live, owner="a", lease_seconds=600)
        repo.lease_evaluation(s, evaluation_id=dead, owner="a", lease_seconds=600)
        s.execute(
            update(Evaluation)
            .where(Evaluation.id == dead)
            .values(lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    with session_scope(engine) as s:
        assert repo.requeue_expired(s, campaign_id=campaign_id) == 1
    with session_scope(engine, readonly=True) as s:
        statuses = {e.id: e.status for e in repo.unfinished_evaluations(s, campaign_id=campaign_id)}
    assert statuses == {live: "running", dead: "queued"}


def test_candidates_page_by_objective_with_a_stable_cursor(engine):
    values = [0.3, math.nan, 0.9, 0.3, None, 0.1, math.inf, 0.5]
    with session_scope(engine) as s:
        campaign_id = make_campaign(s).id
        ids = []
        for i, value in enumerate(values):
            cid = make_candidate(s, campaign_id, f"f{i}").id
            ids.append(cid)
            if value is not None:
                repo.set_objective_values(s, candidate_id=cid, values={"acc": value})
    expected = [ids[6], ids[2], ids[7], ids[0], ids[3], ids[5], ids[1], ids[4]]
    got, cursor = [], None
    with session_scope(engine, readonly=True) as s:
        while True:
            page = repo.list_candidates(
                s, campaign_id=campaign_id, sort="acc", after=cursor, limit=3
            )
            if not page:
                break
            got += [c.id for c in page]
            cursor = repo.candidate_sort_key(page[-1], "acc")
        ascending = [
            c.id
            for c in repo.list_candidates(
                s, campaign_id=campaign_id, sort="acc", descending=False, limit=100
            )
        ]
        by_id = [c.id for c in repo.list_candidates(s, campaign_id=campaign_id, after=ids[5])]
    assert got == expected
    assert ascending[:6] == [ids[5], ids[0], ids[3], ids[7], ids[2], ids[6]]
    assert by_id == ids[6:]


def test_status_changes_are_conditional(engine):
    with session_scope(engine) as s:
        campaign_id = make_campaign(s).id
        repo.set_campaign_status(s, campaign_id=campaign_id, status="running", expected=["queued"])
    with pytest.raises(ConflictError, match="'running'"), session_scope(engine) as s:
        repo.set_campaign_status(
            s, campaign_id=campaign_id, status="running", expected=["queued", "paused"]
        )
    with session_scope(engine, readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        assert campaign.status == "running" and campaign.started_at is not None
        assert [e.kind for e in repo.list_events(s, campaign_id=campaign_id)] == [
            "created",
            "status",
        ]


def test_idempotency_key_is_unique(engine):
    with session_scope(engine) as s:
        make_campaign(s, idempotency_key="same")
    with pytest.raises(ConflictError), session_scope(engine) as s:
        make_campaign(s, idempotency_key="same")


def test_a_failed_transaction_rolls_back_everything(engine):
    with pytest.raises(ConflictError), session_scope(engine) as s:
        campaign_id = make_campaign(s, name="rolled-back").id
        cid = make_candidate(s, campaign_id).id
        repo.add_evaluation(s, candidate_id=cid)
        repo.add_evaluation(s, candidate_id=cid)
    with session_scope(engine, readonly=True) as s:
        assert repo.list_campaigns(s) == []


def test_missing_rows_and_driver_errors_become_storage_errors(engine):
    with pytest.raises(NotFoundError, match="campaign 999"), session_scope(engine) as s:
        repo.get_campaign(s, campaign_id=999)
    with pytest.raises(StorageError, match="database error"), session_scope(engine) as s:
        s.execute(text("SELECT * FROM no_such_table"))


def test_campaigns_list_newest_first_with_status_filter(engine):
    with session_scope(engine) as s:
        ids = [make_campaign(s, name=f"c{i}").id for i in range(5)]
        repo.set_campaign_status(s, campaign_id=ids[1], status="cancelled")
    with session_scope(engine, readonly=True) as s:
        first = repo.list_campaigns(s, limit=2)
        second = repo.list_campaigns(s, limit=2, after=first[-1].id)
        queued = repo.list_campaigns(s, status="queued")
    assert [c.id for c in first + second] == ids[::-1][:4]
    assert ids[1] not in [c.id for c in queued] and len(queued) == 4


def test_requeue_and_duplicates_raise_the_data_version_and_reads_answer_exactly(engine):
    """The reads and writes the controller and the API used to build themselves."""
    with session_scope(engine) as s:
        campaign_id = make_campaign(s).id
        first = make_candidate(s, campaign_id, "f1").id
        copy = make_candidate(s, campaign_id, "f2").id
        running = repo.add_evaluation(s, candidate_id=first, seed=0).id
        repo.lease_evaluation(s, evaluation_id=running, owner="a", lease_seconds=600)
        transfer = repo.add_evaluation(s, candidate_id=first, kind="transfer", seed=2).id
        repo.lease_evaluation(s, evaluation_id=transfer, owner="a", lease_seconds=600)
        repo.finish_evaluation(s, evaluation_id=transfer, status="completed", result={"a": 1})
    version = read_data_version(engine, "campaign", campaign_id).counter
    with session_scope(engine) as s:
        assert repo.requeue_running(s, campaign_id=campaign_id) == 1
        assert repo.requeue_running(s, campaign_id=campaign_id) == 0
    assert read_data_version(engine, "campaign", campaign_id).counter == version + 1
    with session_scope(engine) as s:
        repo.set_duplicates(s, campaign_id=campaign_id, duplicates={copy: first})
    assert read_data_version(engine, "campaign", campaign_id).counter == version + 2
    with session_scope(engine, readonly=True) as s:
        evaluation = repo.get_candidate(s, candidate_id=copy)
        assert evaluation.duplicate_of == first
        assert repo.campaign_status(s, campaign_id=campaign_id) == "queued"
        assert repo.campaign_status(s, campaign_id=10**9) is None
        assert repo.campaign_exists(s, campaign_id=campaign_id)
        assert repo.latest_evaluation(s, candidate_id=first, kind="search").id == running
        assert repo.latest_evaluation(s, candidate_id=copy, kind="search") is None
        assert repo.evaluation_keys(s, campaign_id=campaign_id, kind="transfer") == {(first, 2)}
        done = repo.completed_evaluations(s, campaign_id=campaign_id, kind="transfer")
        assert [e.id for e in done] == [transfer] and done[0].candidate.id == first
        assert [c.id for c in repo.all_candidates(s, campaign_id=campaign_id)] == [first, copy]
        fields = repo.candidate_fields(s, candidate_ids=[first, copy])
        assert set(fields) == {first, copy} and repo.candidate_fields(s, candidate_ids=[]) == {}
        assert repo.candidate_totals(s, campaign_ids=[campaign_id, 10**9]) == {campaign_id: 2}
        assert repo.counts_by_status(s, table="evaluation") == {"queued": 1, "completed": 1}
        assert repo.latest_hypervolume(s, campaign_id=campaign_id) is None
        assert repo.objective_extremes(s, campaign_id=campaign_id) == {}
