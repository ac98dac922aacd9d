"""The one error type the storage layer raises, whatever the database driver said."""


class StorageError(RuntimeError):
    """A database operation failed; the message says which and why.

    Driver errors (sqlite3, psycopg) and SQLAlchemy errors are wrapped into this type by
    :func:`storage.session_scope`, so callers above ``storage`` never import a driver.
    """


class NotFoundError(StorageError):
    """A row that the caller named by id does not exist."""


class ConflictError(StorageError):
    """A write would break a uniqueness rule or act on a row in the wrong state."""


class IdempotencyConflictError(ConflictError):
    """An ``Idempotency-Key`` was used before for a campaign with another spec.

    ``key`` is the key and ``campaign_id`` the campaign it already names."""

    def __init__(self, message: str, *, key: str, campaign_id: int):
        super().__init__(message)
        self.key = key
        self.campaign_id = campaign_id


class DatabaseFileChangedError(StorageError):
    """The SQLite file this process opened was deleted or replaced on disk.

    Raised before a write (and before opening a new connection) once the path no longer names
    the file the engine opened, so nothing is written into an unlinked file or mixed into
    another database. It does not heal: the service must be restarted on a good file.
    ``path`` is the file's path and ``reason`` one of ``deleted``, ``replaced``,
    ``unreadable``.
    """

    def __init__(self, message: str, *, path: str, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


class DatabaseNotWritableError(StorageError):
    """The SQLite file or its folder cannot be written (read-only file, folder or mount).

    Raised when the engine is created, so a service fails at start-up naming the path
    instead of answering every write with an error (see docs/RELIABILITY.md).
    """
