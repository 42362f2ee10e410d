"""planlock.db: one connection and dialect layer for SQLite and PostgreSQL, and one migration
list for every table planlock keeps."""

from planlock.db._connect import (
    Cursor,
    Database,
    Dialect,
    PostgresDB,
    SQLiteDB,
    connect,
    is_dsn,
    pg_connect,
    redact,
)
from planlock.db._migrations import (
    APP_PRIVILEGES,
    MIGRATIONS,
    Migration,
    grant_app,
    migrate,
    pending,
)

__all__ = [
    "APP_PRIVILEGES",
    "MIGRATIONS",
    "Cursor",
    "Database",
    "Dialect",
    "Migration",
    "PostgresDB",
    "SQLiteDB",
    "connect",
    "grant_app",
    "is_dsn",
    "migrate",
    "pending",
    "pg_connect",
    "redact",
]
