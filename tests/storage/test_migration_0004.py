"""Migration 0004 (campaign.idempotency_hash) on SQLite and PostgreSQL: it keeps every
campaign, a campaign stored before it is still matched by its key (compared by its spec),
and the downgrade removes the column and nothing else."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, inspect, text

from layerforge.search.queries import create_or_find_campaign, spec_hash
from layerforge.search.spec import validate_spec
from layerforge.storage import (
    IdempotencyConflictError,
    current_revision,
    downgrade_database,
    get_engine,
    session_scope,
    upgrade_database,
)
from layerforge.storage.models import Campaign
from tests.api.helpers import small_spec


def _columns(engine) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns("campaign")}


def test_0004_adds_the_hash_keeps_old_keys_working_and_downgrades(database_url):
    upgrade_database(database_url, "0003")
    engine = get_engine(database_url)
    spec = validate_spec(small_spec(name="before-0004"))
    assert "idempotency_hash" not in _columns(engine)
    with session_scope(engine) as s:
        # a campaign as 0003 stored it: the columns given only (the hash does not exist yet)
        old_id = s.execute(
            insert(Campaign.__table__)
            .values(
                name=spec.name,
                status="queued",
                spec=spec.model_dump(mode="json"),
                space_kind=spec.space.kind,
                strategy=spec.strategy.name,
                idempotency_key="old-key",
            )
            .returning(Campaign.__table__.c.id)
        ).scalar_one()
    with session_scope(engine) as s:
        before = s.execute(text("SELECT id, name, idempotency_key FROM campaign")).all()

    upgrade_database(database_url, "0004")
    assert current_revision(database_url) == "0004"
    engine = get_engine(database_url)
    with session_scope(engine, readonly=True) as s:
        rows = s.execute(
            text("SELECT id, name, idempotency_key, idempotency_hash FROM campaign")
        ).all()
    assert [tuple(r[:3]) for r in rows] == [tuple(r) for r in before]
    assert rows[0][3] is None

    # the pre-0004 campaign has no hash: the same spec still finds it, another spec is refused
    assert create_or_find_campaign(database_url, spec, idempotency_key="old-key") == (
        old_id,
        False,
    )
    other = validate_spec(small_spec(name="someone-else"))
    with pytest.raises(IdempotencyConflictError) as refused:
        create_or_find_campaign(database_url, other, idempotency_key="old-key")
    assert refused.value.campaign_id == old_id and refused.value.key == "old-key"

    new_id, created = create_or_find_campaign(database_url, other, idempotency_key="new-key")
    assert created
    with session_scope(engine, readonly=True) as s:
        stored = s.execute(
            text("SELECT idempotency_hash FROM campaign WHERE id = :i"), {"i": new_id}
        ).scalar_one()
    assert stored == spec_hash(other) and len(stored) == 64

    downgrade_database(database_url, "0003")
    assert current_revision(database_url) == "0003"
    assert "idempotency_hash" not in _columns(get_engine(database_url))
    with session_scope(get_engine(database_url), readonly=True) as s:
        names = s.execute(text("SELECT name FROM campaign ORDER BY id")).scalars().all()
    assert names == ["before-0004", "someone-else"]


def test_equal_specs_hash_alike_whatever_their_key_order_and_defaults():
    spec = small_spec(name="same")
    reordered = dict(reversed(list(spec.items())))
    with_default = {**spec, "seed": validate_spec(spec).seed}
    assert spec_hash(validate_spec(spec)) == spec_hash(validate_spec(reordered))
    assert spec_hash(validate_spec(spec)) == spec_hash(validate_spec(with_default))
    assert spec_hash(validate_spec(spec)) != spec_hash(validate_spec({**spec, "seed": 1234}))
