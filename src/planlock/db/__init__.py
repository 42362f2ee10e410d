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
from planlock.db._migrations import MIGRATIONS, Migration, migrate

__all__ = [
    "MIGRATIONS",
    "Cursor",
    "Database",
    "Dialect",
    "Migration",
    "PostgresDB",
    "SQLiteDB",
    "connect",
    "is_dsn",
    "migrate",
    "pg_connect",
    "redact",
]
