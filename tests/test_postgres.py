"""The journal and the approval queue on PostgreSQL: one chain and exactly-once claims across
processes, tampering caught by verify, the CLI on a DSN. The shared journal and queue tests
also run on PostgreSQL (``journal_spec`` in conftest); these are the PostgreSQL-only ones."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from planlock import Journal, Plan, SQLiteStore, UsageError
from planlock.db import is_dsn, redact
from planlock.journal import PostgresStore, open_store
from planlock.queue._queue import ApprovalQueue
from planlock.tools._loader import load_tools

ROOT = Path(__file__).resolve().parents[1]
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"
EXE = str(Path(sys.executable).parent / "planlock")
WORKER = [EXE, "worker", "--tools", BANKING]
READ_ONLY = [
    {"step": 1, "tool": "list_transactions"},
    {"step": 2, "tool": "read_bill", "args": {"name": "electricity"}},
]


def fill(journal: Journal, n: int = 5) -> None:
    for i in range(n):
        journal.record(f"run{i % 2}", "step_started", {"step": str(i), "args": {"x": i}})


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, check=False, timeout=120, env=env
    )


# -- without a server ----------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_the_spec(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "j.db"), SQLiteStore)
    assert isinstance(open_store(str(tmp_path / "k.db")), SQLiteStore)
    assert is_dsn("postgresql://u:p@127.0.0.1:1/db")
    assert is_dsn("postgres://u@h/db")
    assert not is_dsn(Path("postgresql:/x"))  # a path is never a DSN
    assert not is_dsn("planlock.db")


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    dsn = "postgresql://planlock:s3cret@127.0.0.1:1/planlock"
    with pytest.raises(UsageError, match="cannot open journal") as exc:
        Journal.open(dsn)
    assert "s3cret" not in str(exc.value)
    assert redact(dsn) == "postgresql://planlock@127.0.0.1:1/planlock"


# -- on a server ------------------------------------------------------------------------------

pg = pytest.mark.integration  # and `postgres`: `pg_schema` (conftest)


@pg
def test_migrations_are_named_and_run_once(pg_schema: str) -> None:
    fill(Journal.open(pg_schema), 2)
    again = Journal.open(pg_schema)  # migrates nothing, keeps the events
    fill(again, 1)
    with psycopg.connect(pg_schema) as db:
        names = [r[0] for r in db.execute("SELECT name FROM migrations ORDER BY name")]
        tables = {
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
    assert names == [
        "0001_events",
        "0002_queue",
        "0003_durable",
        "0004_endorsements",
        "0005_queue_leases",
        "0006_durable_workers",
    ]
    assert {"events", "runs", "approvals", "migrations"} <= tables
    assert [e.seq for e in again.events()] == [1, 2, 3]


@pg
def test_tampering_behind_the_triggers_is_named_by_verify_and_the_cli(pg_schema: str) -> None:
    fill(Journal.open(pg_schema))
    with psycopg.connect(pg_schema, autocommit=True) as db:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            db.execute("UPDATE events SET run_id = 'x' WHERE seq = 1")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            db.execute("TRUNCATE events")
        db.execute("ALTER TABLE events DISABLE TRIGGER USER")  # an attacker who owns the table
        db.execute("""UPDATE events SET data = '{"step":"3","args":{"x":7}}' WHERE seq = 4""")
        db.execute("ALTER TABLE events ENABLE TRIGGER USER")
    report = Journal.open(pg_schema).verify()
    assert (report.ok, report.first_bad) == (False, 4)
    assert "content does not match" in report.reason
    result = cli("journal", "verify", "--journal", pg_schema, "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["first_bad"] == 4


@pg
def test_the_cli_reads_the_journal_dsn_from_the_environment(pg_schema: str) -> None:
    fill(Journal.open(pg_schema), 3)
    env = {**os.environ, "PLANLOCK_JOURNAL": pg_schema}
    result = cli("journal", "verify", env=env)
    assert result.returncode == 0, result.stderr
    assert "3 event(s) verified" in result.stdout
    assert "planlock:planlock@" not in result.stdout  # the password is not printed
    shown = cli("journal", "show", "--run", "run1", "--json", env=env)
    assert [e["seq"] for e in json.loads(shown.stdout)] == [2]


def _append_many(dsn: str, who: str, n: int) -> None:
    journal = Journal.open(dsn)
    for i in range(n):
        journal.record(who, "step_started", {"i": i})


@pg
def test_three_processes_appending_keep_one_unbroken_chain(pg_schema: str) -> None:
    """The schema is empty: the processes also race to migrate it."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(pg_schema, f"p{k}", 80)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    journal = Journal.open(pg_schema)
    events = journal.events()
    assert [e.seq for e in events] == list(range(1, 241))
    assert {e.run_id for e in events} == {"p0", "p1", "p2"}
    for k in range(3):
        assert [e.data["i"] for e in journal.events(f"p{k}")] == list(range(80))
    report = journal.verify()
    assert (report.ok, report.count) == (True, 240)


def _submit_read_only(dsn: str, n: int) -> list[str]:
    queue = ApprovalQueue(Journal.open(dsn))
    registry = load_tools(BANKING)

    async def go() -> list[str]:
        subs = [await queue.submit(Plan.parse(READ_ONLY), registry) for _ in range(n)]
        return [s.run_id for s in subs]

    runs = anyio.run(go)
    queue.close()
    return runs


def _claim_all(dsn: str, worker: str, start: Any, out: Any) -> None:
    queue = ApprovalQueue(Journal.open(dsn))
    start.wait()  # all claimers begin together
    claimed = []
    while (run_id := queue.claim(worker)) is not None:
        claimed.append(run_id)
    out.put((worker, claimed))


@pg
def test_three_processes_claiming_take_every_run_exactly_once(pg_schema: str) -> None:
    runs = _submit_read_only(pg_schema, 2)
    with psycopg.connect(pg_schema) as db:  # 200 more approved runs, copies of the first
        for i in range(200):
            runs.append(f"copy{i:03}")
            db.execute(
                "INSERT INTO runs (run_id, plan, plan_hash, inputs, tools, policy, status, "
                "submitted_by, submitted_at) SELECT %s, plan, plan_hash, inputs, tools, policy, "
                "status, submitted_by, submitted_at FROM runs WHERE run_id = %s",
                (runs[-1], runs[0]),
            )
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(3)
    procs = [
        ctx.Process(target=_claim_all, args=(pg_schema, f"c{k}", start, out)) for k in range(3)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    claimed = [run_id for taken in results.values() for run_id in taken]
    assert sorted(claimed) == sorted(runs)  # each once: no loss, no duplicate
    journal = Journal.open(pg_schema)
    by_event = {e.run_id: e.data["worker"] for e in journal.events() if e.kind == "run_claimed"}
    assert by_event == {r: w for w, taken in results.items() for r in taken}
    assert journal.verify().ok


@pg
@pytest.mark.parametrize("workers", [2, 3])
def test_worker_processes_on_postgres_execute_every_run_exactly_once(
    pg_schema: str, workers: int
) -> None:
    runs = _submit_read_only(pg_schema, 15)
    procs = [
        subprocess.Popen(
            [
                *WORKER,
                "--journal",
                pg_schema,
                "--id",
                f"w{i}",
                "--poll",
                "0.05",
                "--idle-exit",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    for w in procs:
        _, stderr = w.communicate(timeout=300)
        assert w.returncode == 0, stderr
    journal = Journal.open(pg_schema)
    names = {f"w{i}" for i in range(workers)}
    for run_id in runs:
        events = journal.events(run_id)
        kinds = [e.kind for e in events]
        assert kinds.count("run_claimed") == 1, run_id
        assert kinds.count("step_started") == 2, run_id
        claimed = next(e for e in events if e.kind == "run_claimed")
        assert claimed.data["worker"] in names
        assert (events[-1].kind, events[-1].data["status"]) == ("run_finished", "succeeded")
    with psycopg.connect(pg_schema) as db:
        statuses = db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
    assert statuses == [("succeeded", 15)]
    assert journal.verify().ok


PAY_RENT = [
    {"step": 1, "tool": "send_money", "args": {"recipient": "{{user.iban}}", "amount": 950}}
]


def _answer(
    queue: ApprovalQueue, who: str, aid: str, barrier: threading.Barrier, outcomes: list[str]
) -> None:
    barrier.wait()
    try:
        queue.decide(aid, approve=who != "carol", by=who, reason="r")
        outcomes.append(who)
    except UsageError as exc:
        outcomes.append(f"refused: {exc}")


@pg
def test_concurrent_answers_to_one_request_decide_it_once(pg_schema: str) -> None:
    registry = load_tools(BANKING)
    queues = [ApprovalQueue(Journal.open(pg_schema)) for _ in range(3)]

    async def submit() -> str:
        sub = await queues[0].submit(
            Plan.parse(PAY_RENT), registry, inputs={"user": {"iban": "DE89370400440532013000"}}
        )
        assert sub.approval_id is not None
        return sub.approval_id

    for _ in range(4):
        approval_id = anyio.run(submit)
        barrier = threading.Barrier(len(queues))
        outcomes: list[str] = []

        threads = [
            threading.Thread(target=_answer, args=(q, who, approval_id, barrier, outcomes))
            for q, who in zip(queues, ["alice", "bob", "carol"], strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [o for o in outcomes if not o.startswith("refused")]
        assert len(winners) == 1, outcomes
        assert sum("not pending" in o for o in outcomes) == 2, outcomes
        decided = [
            e
            for e in queues[0].journal.events()
            if e.kind in ("approval_granted", "approval_denied") and e.data["id"] == approval_id
        ]
        assert [e.data["by"] for e in decided] == winners
    for q in queues:
        q.close()


@pg
def test_a_store_closes_its_connection(pg_schema: str) -> None:
    store = PostgresStore(pg_schema)
    store.append("r", "run_started", {})
    store.close()
    with pytest.raises(psycopg.OperationalError):
        store.append("r", "run_finished", {})


# -- docs/postgres.md runs --------------------------------------------------------------------

DOC = (ROOT / "docs" / "postgres.md").read_text()
DOC_DSN = "postgresql://planlock:planlock@127.0.0.1:54329/planlock"


def doc_block(lang: str) -> str:
    found = re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.DOTALL)
    assert len(found) == 1, lang
    return str(found[0])


@pg
def test_the_docs_session_runs_two_workers_on_postgres(pg_schema: str) -> None:
    # The test server is already running (make postgres would be a no-op); the session runs
    # in a fresh schema instead of the default one.
    script = doc_block("bash").replace("make postgres", "true").replace(DOC_DSN, pg_schema)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "journal intact" in result.stdout
    journal = Journal.open(pg_schema)
    runs = journal.runs()
    assert len(runs) == 3
    for run_id in runs:
        kinds = [e.kind for e in journal.events(run_id)]
        assert kinds.count("approval_granted") == 1
        assert kinds.count("run_claimed") == 1
        assert kinds[-1] == "run_finished"
        assert journal.events(run_id)[-1].data["status"] == "succeeded"


@pg
def test_the_docs_python_example_runs(pg_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    fill(Journal.open(pg_schema), 2)
    code = doc_block("python").replace(DOC_DSN, pg_schema)
    exec(compile(code, "docs/postgres.md", "exec"), {"__name__": "docs"})
    assert capsys.readouterr().out.strip() == "0 pending; 2 events verified"
