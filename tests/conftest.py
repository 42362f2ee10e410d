"""Shared fixtures, and the test tiers.

Markers (pyproject.toml): ``integration`` (a real local model or server, kept for selection),
and the tiers ``make unit-fast`` leaves out: ``model``, ``postgres``, ``browser``, ``slow``.
``pytest_collection_modifyitems`` below applies ``model`` (tests using ``local_llm``) and
``postgres`` (tests using ``pg_schema``; the ``journal_spec`` fixture's postgres param carries
it itself); ``browser`` and ``slow`` are marked in the test files. An ``integration`` test
that no tier claims is ``slow``, so the fast tier never needs a model or a server.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import typer.main
import typer.testing

from planlock import LLMReply, LLMRequest, LocalLLM, ToolRegistry, demo
from planlock.testing import memory_journal

TIERS = ("model", "postgres", "browser", "slow")

# pytest-xdist's workers inherit COLUMNS=80 from it, and Rich fixes a console's width from
# COLUMNS when the console is built (at import): a test could then not widen the CLI's output
# with ``env={"COLUMNS": ...}``. Without it, the width is read at each print, as in a shell.
os.environ.pop("COLUMNS", None)

# Typer's CliRunner builds the click command from the app's functions again at every invoke
# (their signatures and string annotations, for ~45 commands): about 0.1 s a call, and the suite
# invokes planlock's app some 300 times. Each worker builds it once instead, as a `planlock`
# process does; click makes a fresh context for every call of the command.
_typer_testing = vars(typer.testing)
assert _typer_testing["_get_command"] is typer.main.get_command  # fails if Typer moves it
_typer_testing["_get_command"] = functools.cache(typer.main.get_command)


# Property tests run their full count of examples in `make test` (what CI runs) and a quarter in
# the edit-test loop, `make check` (``--hypothesis-profile=check``): every property still runs
# there, on fewer random examples (about 10 s of CPU less on a slow 2-core machine).
hypothesis.settings.register_profile("check", max_examples=25)


def examples(n: int) -> int:
    """A property test's ``max_examples``: ``n`` under Hypothesis's default profile (100 a test),
    scaled like it by the loaded profile (``check``: a quarter), at least 5."""
    return max(5, n * hypothesis.settings().max_examples // 100)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _rewrite_test_modules_once(config)


def _rewrite_test_modules_once(config: pytest.Config) -> None:
    """Under xdist, the controller rewrites the asserts of the test files the run names (pytest's
    cached ``.pyc``, in ``tests/__pycache__``) before it starts the workers, which then read them.
    With ``PYTHONDONTWRITEBYTECODE=1`` (as on CI) pytest caches nothing: every worker parsed and
    rewrote all 86 files again at collection, about 6 s of CPU each. This writes the cache as
    ``make unit`` byte-compiles ``src``. It uses pytest's private helpers, so if they move it
    does nothing (each worker rewrites for itself, as before); a file it cannot rewrite (a syntax
    error) is left to the workers, whose collection reports it as usual."""
    try:
        from _pytest.assertion import rewrite
        from _pytest.assertion.rewrite import assertstate_key

        state = config.stash[assertstate_key]
        files: set[Path] = set()
        for arg in config.args:
            path = Path(arg.split("::", maxsplit=1)[0])
            if path.is_dir():
                files.update(path.rglob("test_*.py"), path.rglob("conftest.py"))
            elif path.suffix == ".py":
                files.add(path)
        for fn in sorted(f.resolve() for f in files):
            cache = rewrite.get_cache_dir(fn)
            pyc = cache / (fn.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(fn, pyc) is None and rewrite.try_makedirs(cache):
                try:
                    source_hash, code = rewrite._rewrite_test(fn, config)
                except (SyntaxError, ValueError, OSError):
                    continue
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, KeyError, TypeError):
        return


# The embedded model's on-disk prefix cache goes to a directory of this session (each xdist
# worker its own), never the user's cache: a test starts from no cached prefix. Removed when the
# process ends (a model run leaves ~45 MB of prefix state in it).
os.environ["PLANLOCK_PREFIX_CACHE"] = _PREFIX_DIR = tempfile.mkdtemp(prefix="planlock-test-prefix-")
atexit.register(shutil.rmtree, _PREFIX_DIR, ignore_errors=True)

# Under xdist the model's worker shares the cores with the other workers: llama.cpp's threads
# spin at a barrier after every layer, so one descheduled thread stalls the rest. Measured with
# two busy processes beside it on 2 cores, the frontier recipe's plan took 222 s wall and 211 s
# CPU on two threads, 97 s and 64 s on one (66 s against 41 s on a quiet machine).
# So the model gets the cores the other workers leave it, at least one.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _spare = len(os.sched_getaffinity(0)) - (_WORKERS - 1)
    os.environ.setdefault("PLANLOCK_LOCAL_THREADS", str(max(1, _spare)))


MODEL_FILES = frozenset({"tests/test_local_model.py", "tests/test_replan_local.py"})
"""The files of the tests that use the embedded model (``local_llm``): one xdist worker runs
them all, so the model loads once and its replies are reused (``local_plans``)."""


TOGETHER = {
    "tests/test_agentdojo_suites.py::test_workspace_": "agentdojo-workspace",
    "tests/test_pg_restart.py::": "pg-restart",
    "tests/test_mcp.py::": "mcp",  # the MCP fork server
    "tests/test_tool_imports.py::": "tool-imports",  # pydantic-ai, imported by its tests
}
"""Tests (by node id prefix) that share a module-scoped fixture or a costly import: one worker
runs them, so the fixture is built (the module imported) once. For ``test_pg_restart`` this is
required, not only cheaper: its fixture is a PostgreSQL cluster in one fixed directory and port,
which two workers would start at once (``pg_ctl: directory ... does not exist``, seen under
``-n 3``)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _tiers(items)
    # The long tiers first, so that under xdist they start at once and the short tests fill
    # the other workers around them (a long test picked up last would set the wall time).
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in ("slow", "model")))


WORKER_NICE = 5
"""How far the workers beside the model's lower their priority: 5 gives the model's thread a
core against two such workers, and leaves them the other core and whatever the model leaves."""

_first_test: list[str] = []  # this worker's first test, once it has started


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, the model's tests are the longest chain of work, on one llama.cpp thread:
    a worker whose first test is not from the model's files lowers its own priority (and its child
    processes'), so the model's thread keeps a core and the other workers fill what it leaves.
    (The model's unit is the largest, so the scheduler hands it out first: its worker's first
    test is a model test.) Measured on 2 cores (2026-12-06, ``pytest -n 3``): without this,
    the model's first plan took 308 s wall for 159 s of CPU and its chain set the run's wall
    time, 775 s; with it, 658 s, the three workers ending within 2 s of one another."""
    if _first_test or _WORKERS < 2:
        return
    _first_test.append(item.nodeid)
    if item.nodeid.split("::", maxsplit=1)[0] in MODEL_FILES or not any(
        i.get_closest_marker("model") for i in item.session.items
    ):
        return  # the model's worker, or no model in this run (`make check`)
    os.nice(WORKER_NICE)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Each test is a unit of work for any worker, except the model tests, which are one unit
    (and the groups of ``TOGETHER``).
    (xdist's own ``loadgroup`` cannot do this on pytest 9.2: it renames tests through an
    attribute pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ModelTestsTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.split("::", maxsplit=1)[0] in MODEL_FILES:
                return "model"
            return next((g for p, g in TOGETHER.items() if nodeid.startswith(p)), nodeid)

    return ModelTestsTogether(config, log)


def _tiers(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "local_llm" in names:
            item.add_marker(pytest.mark.model)
            if item.nodeid.split("::")[0] not in MODEL_FILES:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the model: add its file to MODEL_FILES"
                )
        if "pg_schema" in names:
            item.add_marker(pytest.mark.postgres)
        marks = {m.name for m in item.iter_markers()}
        if "integration" in marks and not marks.intersection(TIERS):
            item.add_marker(pytest.mark.slow)


FORKSERVER = Path(__file__).parent / "data" / "forkserver.py"
FORK_LAUNCH = Path(__file__).parent / "data" / "fork_launch.py"


@contextlib.contextmanager
def forkserver(*modules: str, env: Mapping[str, str] | None = None) -> Iterator[Path]:
    """A fork server (``tests/data/forkserver.py``) that has imported ``modules``, started with
    ``env``; yields its socket, for ``fork_command``. The socket is in a directory of its own
    under the system's temporary directory: a Unix socket's path has at most 107 bytes, which
    pytest's ``tmp_path`` under a long ``--basetemp`` could pass."""
    folder = Path(tempfile.mkdtemp(prefix="planlock-fork-"))
    sock = folder / "fork.sock"
    proc = subprocess.Popen(
        [sys.executable, str(FORKSERVER), str(sock), *modules],
        stdin=subprocess.DEVNULL,
        env=None if env is None else dict(env),
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, "the fork server exited"
            assert time.monotonic() < deadline, "the fork server did not start"
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def fork_command(sock: Path, script: Path | str, *args: str) -> list[str]:
    """The command that runs ``script args`` forked from the fork server at ``sock``, as
    ``python script args`` would run it (exit status, standard streams, environment, cwd)."""
    return [sys.executable, "-I", "-S", str(FORK_LAUNCH), str(sock), str(script), *args]


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


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=[pytest.mark.integration, pytest.mark.postgres]),
    ]
)
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


# -- the embedded model: loaded once per session ------------------------------------------------


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalLLM]:
    """The embedded model, loaded once for the whole session (tests using it are ``model``)."""
    from planlock.llm._models import load_model

    llm = load_model("local")
    assert isinstance(llm, LocalLLM)
    llm.load()  # here, so the load is the first model test's setup time, not its call time
    _MODELS.append(llm)
    yield llm
    llm.close()


_MODELS: list[LocalLLM] = []
"""The session's embedded model, once a test asked for it (``local_llm``)."""


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Free the model's memory after the last test of the model's files (under xdist they run
    one after another on one worker; a test that needs the model later loads it again).
    The worker goes on with other tests, and with the model loaded (1.9 GB resident) each
    ``os.fork`` of it costs 30 ms of CPU against 0.5 ms (measured): the crash tests fork their
    workers and servers hundreds of times, which cost them 25 s of CPU more beside the model."""
    if (
        _MODELS
        and _file(item) in MODEL_FILES
        and (nextitem is None or _file(nextitem) not in MODEL_FILES)
    ):
        for llm in _MODELS:
            llm.close()
        gc.collect()  # the llama.cpp server, in case a cycle still holds it


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", maxsplit=1)[0]


def request_key(llm: str, request: LLMRequest) -> str:
    """A hash of everything a backend is asked: same key, same request."""
    body = {
        "llm": llm,
        "messages": [[m.role, m.content] for m in request.messages],
        "purpose": request.purpose,
        "json_schema": request.json_schema,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


RECORDED_PLANS = Path(__file__).resolve().parent / "data" / "local-plans.json"
"""The embedded model's replies to the planning and checkpoint requests of the tests that need
*a* plan for a goal, or *a* revision of one (``local_plans``), keyed by ``request_key`` under
the model's and runtime's identity. Re-record after changing the planner's or the replanner's
prompt: ``PLANLOCK_RECORD_PLANS=1 pytest -m model`` (``test_model_recordings.py`` fails in the
fast tier until then). ``PLANLOCK_FRESH_PLANS=1`` ignores the file and asks the model
everything."""


def model_identity() -> str:
    """The model file and the runtime that wrote a recorded reply: another of either, and the
    recordings are not used."""
    import xllamacpp

    from planlock.llm._local import DEFAULT_MODEL

    return f"sha256:{DEFAULT_MODEL.sha256}|xllamacpp {getattr(xllamacpp, '__version__', '?')}"


def load_recorded_plans(identity: str) -> dict[str, LLMReply]:
    """The recorded replies, if they were recorded with ``identity`` (``model_identity``)."""
    if not RECORDED_PLANS.exists():
        return {}
    data = json.loads(RECORDED_PLANS.read_text())
    if data["identity"] != identity:
        return {}
    return {key: LLMReply(**reply) for key, reply in data["replies"].items()}


RECORDED_PURPOSES = frozenset({"plan", "checkpoint", "replan"})
"""The requests whose replies are recorded: plans, and the revisions of plans at a checkpoint or
after an error. An ``llm`` step's call is not: it runs on the model every time."""


class ReplayLLM:
    """The embedded model, answering a request it was already asked, in this session or in the
    run that recorded ``RECORDED_PLANS``, with the reply it gave then (the model is greedy: the
    same prompt gets the same plan; ``test_a_recorded_reply_is_what_the_model_writes_today``
    checks one against the model). Only for tests that need *a* plan for a goal or *a* revision
    of one, not for tests that examine generation itself (reading, streaming, stopping)."""

    def __init__(self, llm: LocalLLM, replies: dict[str, LLMReply], used: set[str]) -> None:
        self.llm = llm
        self.name = llm.name
        self.replies = replies
        self.used = used
        self.hits = 0

    @property
    def model_label(self) -> str:
        return self.llm.model_label

    @property
    def load_seconds(self) -> float | None:
        return self.llm.load_seconds

    async def complete(self, request: LLMRequest) -> LLMReply:
        key = request_key(self.name, request)
        if request.purpose in RECORDED_PURPOSES:  # an llm step runs for real
            self.used.add(key)
        if key in self.replies:
            self.hits += 1
            return self.replies[key]
        reply = await self.llm.complete(request)  # errors are not remembered
        self.replies[key] = reply
        return reply


@pytest.fixture(scope="session")
def model_replies() -> Iterator[tuple[dict[str, LLMReply], set[str]]]:
    """The session's replies, seeded from ``RECORDED_PLANS``; with ``PLANLOCK_RECORD_PLANS=1``
    the replies this session used are written back (and only those: stale keys go)."""
    identity = model_identity()
    fresh = os.environ.get("PLANLOCK_FRESH_PLANS") == "1"
    replies = {} if fresh else load_recorded_plans(identity)
    used: set[str] = set()
    yield replies, used
    if os.environ.get("PLANLOCK_RECORD_PLANS") == "1" and used:
        kept = {k: dataclasses.asdict(replies[k]) for k in sorted(used) if k in replies}
        body = {"identity": identity, "replies": kept}
        RECORDED_PLANS.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def local_plans(
    local_llm: LocalLLM, model_replies: tuple[dict[str, LLMReply], set[str]]
) -> ReplayLLM:
    """The embedded model behind the recorded and the session's replies, keyed by a hash of
    the request."""
    return ReplayLLM(local_llm, *model_replies)
