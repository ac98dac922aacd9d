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
