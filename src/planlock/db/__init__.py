"""planlock.db: one connection and dialect layer for SQLite and PostgreSQL, and one migration
list for every table planlock keeps."""

from planlock.db._connect import (
    Cursor,
    Database,
    Dialect,
    PostgresDB,
    Rows,
    SQLiteDB,
    connect,
    is_dsn,
    pg_connect,
    redact,
    transact,
)
from planlock.db._migrations import (
    APP_PRIVILEGES,
    MIGRATIONS,
    Migration,
    grant_app,
    migrate,
    pending,
)
from planlock.db._pool import DEFAULT_WAIT, current_wait, reconnect_wait

__all__ = [
    "APP_PRIVILEGES",
    "DEFAULT_WAIT",
    "MIGRATIONS",
    "Cursor",
    "Database",
    "Dialect",
    "Migration",
    "PostgresDB",
    "Rows",
    "SQLiteDB",
    "connect",
    "current_wait",
    "grant_app",
    "is_dsn",
    "migrate",
    "pending",
    "pg_connect",
    "reconnect_wait",
    "redact",
    "transact",
]
