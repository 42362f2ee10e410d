from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from planlock import ToolRegistry, demo
from planlock.testing import memory_journal


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk() -> demo.HelpDesk:
    return demo.HelpDesk.sample()


@pytest.fixture
def registry(desk: demo.HelpDesk) -> ToolRegistry:
    """The demo's tools over a fresh help desk."""
    return demo.build_registry(desk)


@pytest.fixture
def journal() -> Iterator[object]:
    j = memory_journal()
    yield j
    assert j.verify().ok


# -- journal backends: SQLite, and PostgreSQL when PLANLOCK_PG_DSN is set ----------------------


def pg_dsn() -> str:
    """The test server's DSN; skips without one, fails instead when PLANLOCK_REQUIRE_PG=1."""
    dsn = os.environ.get("PLANLOCK_PG_DSN", "")
    if not dsn:
        if os.environ.get("PLANLOCK_REQUIRE_PG") == "1":
            pytest.fail("PLANLOCK_REQUIRE_PG=1 but PLANLOCK_PG_DSN is not set")
        pytest.skip("PostgreSQL not configured: run `make postgres`, set PLANLOCK_PG_DSN")
    return dsn


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema (dropped after the test)."""
    import psycopg

    base = pg_dsn()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def journal_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a fresh journal lives, for ``Journal.open`` and ``--journal``: an SQLite file,
    or a PostgreSQL DSN (a fresh schema per test)."""
    if request.param == "sqlite":
        return tmp_path / "journal.db"
    return str(request.getfixturevalue("pg_schema"))


RawSQL = Callable[..., None]


@pytest.fixture
def raw_sql(journal_spec: str | Path) -> RawSQL:
    """Run one statement (``?`` placeholders) on the journal's database behind planlock's
    back, as an attacker with write access would. ``tamper=True`` first switches off the
    append-only triggers on ``events``; without it their refusal propagates."""

    def run(sql: str, params: Sequence[Any] = (), *, tamper: bool = False) -> None:
        if isinstance(journal_spec, Path):
            db = sqlite3.connect(journal_spec)
            try:
                if tamper:
                    db.execute("DROP TRIGGER IF EXISTS events_no_update")
                    db.execute("DROP TRIGGER IF EXISTS events_no_delete")
                db.execute(sql, tuple(params))
                db.commit()
            finally:
                db.close()
            return
        import psycopg

        with psycopg.connect(journal_spec, autocommit=True) as pg:
            if tamper:
                pg.execute("ALTER TABLE events DISABLE TRIGGER USER")
            pg.execute(sql.replace("?", "%s").encode(), tuple(params))

    return run
