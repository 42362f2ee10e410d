"""PostgreSQL with two roles: the tables' owner runs the migrations (``planlock db migrate
--grant``), the application's role may only INSERT and SELECT on ``events`` (and what the queue
needs on the other tables): it cannot UPDATE, DELETE or TRUNCATE the journal, nor switch off its
triggers. The owner still can; an anchor kept elsewhere catches that.

Needs ``$PLANLOCK_PG_DSN`` (the application, ``scripts/postgres.sh dsn``) and
``$PLANLOCK_PG_OWNER_DSN`` (``scripts/postgres.sh owner-dsn``); each test gets a fresh schema
owned by the owner role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import pg_dsn
from typer.testing import CliRunner

from planlock import Anchoring, Journal, UsageError
from planlock.cli import app
from planlock.db import APP_PRIVILEGES, MIGRATIONS

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "planlock")
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"


def pg_owner_dsn() -> str:
    dsn = os.environ.get("PLANLOCK_PG_OWNER_DSN", "")
    if not dsn:
        if os.environ.get("PLANLOCK_REQUIRE_PG") == "1":
            pytest.fail("PLANLOCK_REQUIRE_PG=1 but PLANLOCK_PG_OWNER_DSN is not set")
        pytest.skip("set PLANLOCK_PG_OWNER_DSN (scripts/postgres.sh owner-dsn)")
    return dsn


def in_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"


@dataclass(frozen=True)
class Split:
    owner: str
    """The owner's DSN, search_path the test's schema."""
    app: str
    """The application's DSN, same schema."""
    app_role: str


@pytest.fixture
def split() -> Iterator[Split]:
    """A fresh schema owned by the owner role, not yet migrated; the app role may not use it
    until ``db migrate --grant`` (or ``USAGE``) says so."""
    owner, app = pg_owner_dsn(), pg_dsn()
    schema = f"split_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(owner, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}".encode())
    role = str(psycopg.conninfo.conninfo_to_dict(app)["user"])
    try:
        yield Split(in_schema(owner, schema), in_schema(app, schema), role)
    finally:
        with psycopg.connect(owner, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, check=False, timeout=300, env=env
    )


def migrate(split: Split) -> None:
    """``planlock db migrate`` as the owner, granting the app role (in this process: the tests
    that call it examine what the roles may do afterwards; one runs the command's process too)."""
    args = ["db", "migrate", "--dsn", split.owner, "--grant", split.app_role]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_applied(result.stdout)


def assert_applied(stdout: str) -> None:
    assert "migrations applied" in stdout
    assert "0001_events" in stdout


def test_without_migrations_the_app_role_says_what_to_run(split: Split) -> None:
    with psycopg.connect(split.owner, autocommit=True) as db:
        schema = db.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        db.execute(f'GRANT USAGE ON SCHEMA "{schema[0]}" TO "{split.app_role}"'.encode())
    with pytest.raises(UsageError, match=r"may not create them.*planlock db migrate --dsn"):
        Journal.open(split.app)
    result = cli("journal", "show", "--journal", split.app)
    assert result.returncode == 2
    assert "planlock db migrate --dsn OWNER_DSN --grant APP_ROLE" in result.stderr
    assert "planlock:planlock@" not in result.stderr


def test_the_owner_migrates_and_the_app_role_works_without_creating_anything(
    split: Split, tmp_path: Path
) -> None:
    first = cli("db", "migrate", "--dsn", split.owner, "--grant", split.app_role)
    assert first.returncode == 0, first.stderr
    assert_applied(first.stdout)
    again = cli("db", "migrate", "--dsn", split.owner)
    assert "none (up to date)" in again.stdout
    journal = Journal.open(split.app, Anchoring())
    journal.record("r1", "run_started", {})
    assert journal.verify().ok
    # The docs session's commands (docs/postgres.md: three payments submitted, approved and run
    # by two workers, then verified) as the application role, through the CLI in this process:
    # the privileges are those of the SQL it sends, whatever process sends it.
    # (tests/test_postgres.py runs the session itself, as written, in a shell.)
    as_app = CliRunner(env={"PLANLOCK_JOURNAL": split.app})

    def run(*args: str) -> str:
        result = as_app.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    for _ in range(3):
        run(
            "submit",
            str(ROOT / "examples" / "pay_landlord_plan.json"),
            "--tools",
            BANKING,
            "--input",
            'user={"landlord_iban": "DE89370400440532013000"}',
        )
    pending = json.loads(run("approvals", "list", "--json"))
    assert len(pending) == 3
    for request in pending:
        run("approve", request["id"], "--as", "alice", "--reason", "rent")
    for worker in ("worker-a", "worker-b"):
        run("worker", "--tools", BANKING, "--id", worker, "--once")
    assert "journal intact" in run("journal", "verify")
    after = Journal.open(split.app, Anchoring())
    runs = after.runs()
    assert len(runs) == 4  # r1 and the three payments
    finished = [after.events(r)[-1].data for r in runs if r != "r1"]
    assert [f["status"] for f in finished] == ["succeeded"] * 3
    with psycopg.connect(split.owner) as db:
        owners = {
            r[0]
            for r in db.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
    assert split.app_role not in owners  # the app created no table


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET data = '{}' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 2",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "ALTER TABLE events DISABLE TRIGGER events_no_update",
        "DROP TRIGGER events_no_update ON events",
        "DROP TABLE events",
        "ALTER TABLE events OWNER TO CURRENT_USER",
        "CREATE TABLE events_copy (seq BIGINT)",
        "DELETE FROM approvals",
        "UPDATE migrations SET name = 'x'",
    ],
)
def test_the_app_role_cannot_rewrite_the_journal(split: Split, sql: str) -> None:
    migrate(split)
    journal = Journal.open(split.app, Anchoring())
    for i in range(3):
        journal.record("r", "step_started", {"i": i})
    with (
        psycopg.connect(split.app, autocommit=True) as db,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        db.execute(sql.encode())
    assert Journal.open(split.app, Anchoring()).verify().count == 3


def test_the_owner_still_can_and_the_anchor_catches_it(split: Split, tmp_path: Path) -> None:
    migrate(split)
    anchors = tmp_path / "anchors.jsonl"
    journal = Journal.open(split.app, Anchoring(file=anchors))
    for i in range(4):
        journal.record("r", "step_started", {"i": i})
    journal.close()
    with psycopg.connect(split.owner, autocommit=True) as db:  # the owner, or a superuser
        db.execute("ALTER TABLE events DISABLE TRIGGER USER")
        db.execute("DELETE FROM events WHERE seq > 2")
        db.execute("ALTER TABLE events ENABLE TRIGGER USER")
    assert Journal.open(split.app, Anchoring()).verify().ok
    result = cli("journal", "verify", "--journal", split.app, "--anchor", str(anchors))
    assert result.returncode == 1
    assert "tail truncated" in result.stderr


def test_every_table_has_its_application_privileges(split: Split) -> None:
    migrate(split)
    with psycopg.connect(split.owner) as db:
        tables = {
            r[0]
            for r in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        granted = {
            (r[0], r[1])
            for r in db.execute(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND table_schema = current_schema()",
                (split.app_role,),
            )
        }
    assert tables == set(APP_PRIVILEGES)
    assert len(MIGRATIONS) == 6  # a new migration: give its tables their privileges above
    want = {(t, p.strip()) for t, ps in APP_PRIVILEGES.items() for p in ps.split(",")}
    assert granted == want
    assert ("events", "INSERT") in granted
    assert not {p for t, p in granted if t == "events"} - {"INSERT", "SELECT"}
