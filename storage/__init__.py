"""Persistent state of layerforge: SQLAlchemy models, the repository contract, migrations.

Use it as::

    from layerforge.storage import get_engine, session_scope, upgrade_database, repository as repo

    upgrade_database(url)
    with session_scope(get_engine(url)) as session:
        campaign = repo.create_campaign(session, name=..., ...)

The contract every backend honours is written in :mod:`storage.repository`'s docstring.
"""

from layerforge.storage import repository
from layerforge.storage.encoding import decode_float, encode_float, json_safe
from layerforge.storage.engine import (
    DATABASE_URL_VARIABLE,
    DEFAULT_DATABASE_URL,
    create_engine_for,
    dispose_engines,
    get_engine,
    is_transient,
    ping,
    session_scope,
    validate_database_url,
    verify_database_file,
)
from layerforge.storage.errors import (
    ConflictError,
    DatabaseFileChangedError,
    DatabaseNotWritableError,
    IdempotencyConflictError,
    NotFoundError,
    StorageError,
)
from layerforge.storage.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from layerforge.storage.models import Campaign, Candidate, Evaluation
from layerforge.storage.statuses import (
    CAMPAIGN_FINISHED,
    CAMPAIGN_STATUSES,
    CANDIDATE_IN_FLIGHT,
    CANDIDATE_STATUSES,
    EVALUATION_ENDED,
    EVALUATION_IN_FLIGHT,
    EVALUATION_KINDS,
    EVALUATION_STATUSES,
    CampaignStatus,
    CandidateStatus,
    EvaluationKind,
    EvaluationStatus,
)
from layerforge.storage.versions import read_data_version

__all__ = [
    "CAMPAIGN_FINISHED",
    "CAMPAIGN_STATUSES",
    "CANDIDATE_IN_FLIGHT",
    "CANDIDATE_STATUSES",
    "EVALUATION_ENDED",
    "EVALUATION_IN_FLIGHT",
    "EVALUATION_KINDS",
    "EVALUATION_STATUSES",
    "Campaign",
    "CampaignStatus",
    "Candidate",
    "CandidateStatus",
    "Evaluation",
    "EvaluationKind",
    "EvaluationStatus",
    "DATABASE_URL_VARIABLE",
    "DEFAULT_DATABASE_URL",
    "ConflictError",
    "DatabaseFileChangedError",
    "DatabaseNotWritableError",
    "IdempotencyConflictError",
    "NotFoundError",
    "StorageError",
    "create_engine_for",
    "current_revision",
    "decode_float",
    "dispose_engines",
    "downgrade_database",
    "encode_float",
    "get_engine",
    "head_revision",
    "ping",
    "is_transient",
    "json_safe",
    "repository",
    "read_data_version",
    "session_scope",
    "upgrade_database",
    "validate_database_url",
    "verify_database_file",
]
