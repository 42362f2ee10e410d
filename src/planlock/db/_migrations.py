"""Every table planlock keeps, as one list of named, forward-only migrations.

A migration is portable SQL, or one script per dialect where the two differ (the journal's
append-only triggers). ``migrate`` applies, in one transaction, the ones a database has not
recorded in its ``migrations`` table; several processes opening one database at once apply
each migration exactly once.

The tables:

- ``events``: the journal (append-only, hash-chained; see ``planlock.journal``);
- ``runs``, ``approvals``: the approval queue's working state (``planlock.queue``); a claimed
  run carries its worker's lease (``claimed_by``, ``lease_expires_at``), and ``queue_calls``
  holds one row per tool call a queue worker started, with its outcome once it has one;
- ``durable_runs``, ``durable_starts``, ``durable_deliveries``, ``durable_workers``: the
  durable engine's (``planlock.durable``); ``durable_workers`` holds each DBOS worker's
  liveness lease (its heartbeat), which ``adopt`` checks;
- ``endorsements``: values a person endorsed, bound to their hash and source
  (``planlock.approval``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from planlock.db._connect import Database, Dialect
from planlock.errors import UsageError

__all__ = ["APP_PRIVILEGES", "MIGRATIONS", "Migration", "grant_app", "migrate", "pending"]


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str | dict[Dialect, str]

    def script(self, dialect: Dialect) -> str:
        return self.sql if isinstance(self.sql, str) else self.sql[dialect]


_EVENTS = """
        CREATE TABLE events (
            seq {seq_type} PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_run ON events (run_id, seq);
"""

_QUEUE = """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            inputs TEXT NOT NULL,
            tools TEXT NOT NULL,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_by TEXT NOT NULL,
            submitted_at TEXT NOT NULL,
            claimed_by TEXT,
            claimed_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX runs_status ON runs (status, submitted_at);
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            step_id TEXT,
            args_hash TEXT,
            request TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            decided_by TEXT,
            decided_via TEXT,
            decided_at TEXT,
            reason TEXT,
            used_at TEXT
        );
        CREATE INDEX approvals_status ON approvals (status, created_at);
        CREATE INDEX approvals_run ON approvals (run_id);
"""

# IF NOT EXISTS: before this migration existed, the durable engine created its tables itself.
_DURABLE = """
        CREATE TABLE IF NOT EXISTS durable_runs (
            run_id TEXT PRIMARY KEY,
            plan TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            inputs TEXT NOT NULL,
            policy TEXT NOT NULL,
            approval_id TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_by TEXT NOT NULL,
            submitted_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS durable_starts (
            key TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            round INTEGER NOT NULL,
            at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS durable_deliveries (
            approval_id TEXT PRIMARY KEY,
            at TEXT NOT NULL
        );
"""

_ENDORSEMENTS = """
        CREATE TABLE endorsements (
            id TEXT PRIMARY KEY,
            value_hash TEXT NOT NULL,
            source TEXT NOT NULL,
            target TEXT,
            label TEXT NOT NULL,
            endorsed_by TEXT NOT NULL,
            via TEXT NOT NULL,
            at TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT,
            revoked_by TEXT
        );
        CREATE INDEX endorsements_value ON endorsements (value_hash, source);
"""

# A run's lease, and the queue's record of started calls (R11: a row without an outcome is a
# call that may or may not have happened).
_LEASES = """
        ALTER TABLE runs ADD COLUMN lease_expires_at TEXT;
        CREATE TABLE queue_calls (
            key TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            item INTEGER,
            round INTEGER NOT NULL,
            worker TEXT NOT NULL,
            started_at TEXT NOT NULL,
            outcome TEXT
        );
        CREATE INDEX queue_calls_run ON queue_calls (run_id);
"""

# The durable engine's workers and their liveness leases (open-source DBOS has no heartbeat):
# ``planlock durable adopt`` refuses a worker whose lease is live. A durable run's requests
# expire after its ``expires_in`` seconds (NULL: the worker's default), and it may be revised
# ``max_replans`` times (on a worker with a replanner).
_DURABLE_WORKERS = """
        ALTER TABLE durable_runs ADD COLUMN expires_in REAL;
        ALTER TABLE durable_runs ADD COLUMN max_replans INTEGER;
        CREATE TABLE durable_workers (
            worker_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL,
            lease_until TEXT
        );
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_events",
        {
            "sqlite": _EVENTS.format(seq_type="INTEGER")
            + """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
""",
            "postgresql": _EVENTS.format(seq_type="BIGINT")
            + """
        CREATE FUNCTION planlock_append_only() RETURNS trigger LANGUAGE plpgsql AS
            'BEGIN RAISE EXCEPTION ''the journal is append-only''; END';
        CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
            FOR EACH ROW EXECUTE FUNCTION planlock_append_only();
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION planlock_append_only();
""",
        },
    ),
    Migration("0002_queue", _QUEUE),
    Migration("0003_durable", _DURABLE),
    Migration("0004_endorsements", _ENDORSEMENTS),
    Migration("0005_queue_leases", _LEASES),
    Migration("0006_durable_workers", _DURABLE_WORKERS),
)


# What the application needs on each table when another role owns them (``grant_app``): the
# journal is append-only, so INSERT and SELECT; nothing is ever deleted. planlock's tables have
# no sequences (``seq`` is set by the appending transaction).
APP_PRIVILEGES: dict[str, str] = {
    "migrations": "SELECT",
    "events": "SELECT, INSERT",
    "runs": "SELECT, INSERT, UPDATE",
    "approvals": "SELECT, INSERT, UPDATE",
    "durable_runs": "SELECT, INSERT, UPDATE",
    "durable_starts": "SELECT, INSERT",
    "durable_deliveries": "SELECT, INSERT",
    "durable_workers": "SELECT, INSERT, UPDATE",
    "endorsements": "SELECT, INSERT, UPDATE",
    "queue_calls": "SELECT, INSERT, UPDATE",
}

_INSUFFICIENT_PRIVILEGE = "42501"
_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def pending(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """The migrations ``db`` has not recorded, read without any DDL (so a role that may not
    create tables can tell an up-to-date database from one that needs its owner)."""
    if db.dialect == "sqlite":
        probe = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
    else:
        probe = "SELECT 1 WHERE to_regclass('migrations') IS NOT NULL"
    if db.execute(probe).fetchone() is None:
        return [m.name for m in migrations]
    done = {r[0] for r in db.execute("SELECT name FROM migrations").fetchall()}
    return [m.name for m in migrations if m.name not in done]


def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the migrations ``db`` has not recorded; return their names.

    A database whose migrations are all recorded is left alone (no DDL runs), so an application
    role with no right to create tables works once the tables' owner has migrated. When some
    are missing and this role may not create them, a ``UsageError`` says what to run."""
    if not pending(db, migrations):
        return []
    try:
        return _apply(db, migrations)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        missing = ", ".join(pending(db, migrations))
        why = (str(exc).splitlines() or [""])[0]
        raise UsageError(
            f"the database lacks planlock's tables (migrations {missing}) and this role may not "
            "create them: have the tables' owner run "
            f"`planlock db migrate --dsn OWNER_DSN --grant APP_ROLE` ({why})"
        ) from None


def _apply(db: Database, migrations: tuple[Migration, ...]) -> list[str]:
    applied: list[str] = []
    with db.tx():
        db.serialize("migrate")
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, at TEXT)")
        done = {r[0] for r in db.execute("SELECT name FROM migrations").fetchall()}
        for m in migrations:
            if m.name not in done:
                db.script(m.script(db.dialect))
                db.execute(
                    "INSERT INTO migrations VALUES (?, ?)", (m.name, datetime.now(UTC).isoformat())
                )
                applied.append(m.name)
    return applied


def grant_app(db: Database, role: str) -> list[str]:
    """PostgreSQL: grant ``role`` what the application needs (``APP_PRIVILEGES``) on the tables
    of the current schema, and USAGE on the schema; nothing more (it cannot UPDATE, DELETE or
    TRUNCATE ``events``, nor, not owning them, alter the tables or their triggers). Returns the
    statements run."""
    if db.dialect != "postgresql":
        raise UsageError("--grant is for PostgreSQL (an SQLite file has no roles)")
    if not _ROLE.fullmatch(role):
        raise UsageError(f"not a role name: {role!r}")
    statements = [f'GRANT USAGE ON SCHEMA "{_schema(db)}" TO "{role}"']
    statements += [f'GRANT {p} ON "{t}" TO "{role}"' for t, p in APP_PRIVILEGES.items()]
    try:
        with db.tx():
            for statement in statements:
                db.execute(statement)
    except Exception as exc:
        raise UsageError(f"cannot grant {role} the application's privileges: {exc}") from None
    return statements


def _schema(db: Database) -> str:
    row = db.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise UsageError("no schema: the DSN's search_path names no existing schema")
    return str(row[0]).replace('"', '""')
