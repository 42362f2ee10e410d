"""The limit a durable worker shares with the other workers of its queue.

DBOS keeps a queue's per-worker limit (``worker_concurrency``) with the queue, in its system
database, and every worker reloads it as it polls: the limit is the same for all the workers of
the queue. A worker that stored its own ``--concurrency`` would change the limit of the workers
already running (it did: 1 became 3 under a live worker), so a worker whose limit differs from
the queue's while another worker is live is refused, before DBOS is launched. Joining stops
short of launching DBOS, so these tests run in this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("dbos")

from dbos import DBOSClient
from test_durable import TOOLS
from test_durable_support import registry
from test_server_support import TOKENS_TOML, free_port
from typer.testing import CliRunner

from planlock import Journal
from planlock.cli import app
from planlock.durable import DurableWorker, WorkerContext
from planlock.durable._client import QUEUE_POLL, system_database_url, system_schema
from planlock.durable._workflow import QUEUE_NAME
from planlock.errors import UsageError

runner = CliRunner()


class Fleet:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.journal = tmp_path / "journal.db"
        self.db = system_database_url(str(tmp_path / "dbos.sqlite"))
        self.workers: list[DurableWorker] = []

    def worker(self, wid: str, concurrency: int | None, poll: float | None = None) -> DurableWorker:
        context = WorkerContext(registry, Journal.open(self.journal))
        worker = DurableWorker(
            context, db_url=self.db, executor_id=wid, worker_concurrency=concurrency, poll=poll
        )
        self.workers.append(worker)
        return worker

    def limit(self) -> int | None:
        return self._queue()[0]

    def poll(self) -> float:
        return self._queue()[1]

    def _queue(self) -> tuple[int | None, float]:
        client = DBOSClient(system_database_url=self.db, dbos_system_schema=system_schema())
        try:
            queue = client.retrieve_queue(QUEUE_NAME)
            assert queue is not None
            return queue.worker_concurrency, queue.polling_interval_sec
        finally:
            client.destroy()

    def cli(self, *args: str) -> tuple[int, str]:
        res = runner.invoke(app, [*args, "--journal", str(self.journal), "--db", self.db])
        return res.exit_code, res.output


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    for w in f.workers:
        w.close()


def test_a_worker_cannot_change_the_limit_of_the_live_workers_of_its_queue(fleet: Fleet) -> None:
    first = fleet.worker("w1", 1)
    first.join()
    assert fleet.limit() == 1
    with pytest.raises(UsageError, match=r"live workers of the queue \(w1\) each take at most 1"):
        fleet.worker("w2", 3).join()
    with pytest.raises(UsageError, match="--concurrency 1"):
        fleet.worker("w2", None).join()  # no limit would lift w1's
    assert fleet.limit() == 1  # w1 still takes one run at a time
    fleet.worker("w3", 1).join()  # the same limit: welcome
    assert fleet.limit() == 1


def test_once_the_live_workers_stopped_a_worker_sets_a_new_limit(fleet: Fleet) -> None:
    first = fleet.worker("w1", 1)
    first.join()
    first.close()  # a clean stop ends its lease at once
    fleet.worker("w2", 3).join()
    assert fleet.limit() == 3
    # w2 restarted with another limit (a killed w2's lease is still running): only the others'
    # leases count, and there are none
    fleet.worker("w2", 2).join()
    assert fleet.limit() == 2


def test_the_cli_refuses_with_exit_2_and_says_which_options_a_dbos_worker_ignores(
    fleet: Fleet,
) -> None:
    fleet.worker("w1", 1).join()
    code, out = fleet.cli(
        "worker", "--engine", "dbos", "--id", "w2", "--tools", TOOLS, "--concurrency", "3",
        "--once", "--poll", "1",
    )  # fmt: skip
    assert code == 2, out
    assert "warning: --once: only for --engine queue" in out  # --poll is the dbos worker's too
    assert "(w1) each take at most 1 run(s)" in out
    assert "worker --concurrency 1, serve --workers 1" in out
    (fleet.dir / "tokens.toml").write_text(TOKENS_TOML, encoding="utf-8")
    code, out = fleet.cli(
        "serve", "--engine", "dbos", "--tools", TOOLS, "--tokens", str(fleet.dir / "tokens.toml"),
        "--workers", "3", "--id", "srv", "--port", str(free_port()),
    )  # fmt: skip
    assert code == 2, out
    assert "(w1) each take at most 1 run(s)" in out
    assert "planlock serve: http" not in out  # refused before it listened
    assert fleet.limit() == 1


def test_a_worker_whose_database_stays_unreachable_exits_5_after_its_wait(
    tmp_path: Path,
) -> None:
    nowhere = "postgresql://nobody:nothing@127.0.0.1:1/none"  # port 1: refused at once
    args = ["worker", "--engine", "dbos", "--id", "w1", "--tools", TOOLS, "--db", nowhere]
    args += ["--journal", str(tmp_path / "journal.db"), "--db-wait", "1"]
    started = time.monotonic()
    res = runner.invoke(app, args)
    assert res.exit_code == 5, res.output
    assert time.monotonic() - started >= 1.0  # it kept trying for --db-wait
    assert "worker w1: a database stayed unreachable for 1 s (connection failed" in res.output
    assert "so that a supervisor restarts it" in res.output
    assert "warning" not in res.output  # --db-wait is the dbos worker's too


def test_serve_whose_database_stays_unreachable_exits_5_before_it_listens(
    tmp_path: Path,
) -> None:
    (tmp_path / "tokens.toml").write_text(TOKENS_TOML, encoding="utf-8")
    nowhere = "postgresql://nobody:nothing@127.0.0.1:1/none"
    args = ["serve", "--engine", "dbos", "--tools", TOOLS, "--db", nowhere, "--db-wait", "0"]
    args += ["--tokens", str(tmp_path / "tokens.toml"), "--journal", str(tmp_path / "j.db")]
    res = runner.invoke(app, [*args, "--port", str(free_port())])
    assert res.exit_code == 5, res.output
    assert "planlock serve: a database stayed unreachable for 0 s (connection failed" in res.output
    assert "planlock serve: http" not in res.output


def test_the_polling_interval_is_the_queues_and_given_only_to_change_it(fleet: Fleet) -> None:
    first = fleet.worker("w1", None)
    first.join()
    assert fleet.poll() == QUEUE_POLL  # a new queue's
    with pytest.raises(UsageError, match=r"\(w1\) check it every 0.05 s.*give this one --poll"):
        fleet.worker("w2", None, poll=1.0).join()
    first.close()
    fleet.worker("w2", None, poll=1.0).join()  # nobody else live: it sets the queue's
    assert fleet.poll() == 1.0
    third = fleet.worker("w3", None)  # no --poll: the queue's
    third.join()
    assert third.poll == 1.0
    assert fleet.poll() == 1.0
    with pytest.raises(UsageError, match="must be positive"):
        fleet.worker("w4", None, poll=0)


class _NeverWaited(threading.Event):
    """A stop event that fails the test if the serving thread waits on it."""

    def wait(self, timeout: float | None = None) -> bool:
        raise AssertionError("serve() waited on its stop event")


def test_serve_reads_its_stop_event_and_never_waits_on_it(fleet: Fleet) -> None:
    """`planlock worker --engine dbos` sets ``stop`` from its SIGTERM handler, which runs in the
    thread that serves. ``Event.wait`` holds the event's lock for a moment at each call; a SIGTERM
    handled in that moment blocked in ``Event.set`` for ever, and the worker never stopped (seen:
    a worker still running an hour after its SIGTERM, the handler's frame on top of
    ``Condition.wait`` in its stack). So serve() reads ``stop`` and sleeps between reads."""
    worker = fleet.worker("w1", None)
    stop = _NeverWaited()
    setter = threading.Timer(0.3, stop.set)  # as a handler would, at some moment of the loop
    started = time.monotonic()
    setter.start()
    worker.serve(stop=stop, poll=0.01)
    assert stop.is_set()  # it served until the stop, and saw the stop
    assert time.monotonic() - started < 5
    setter.join()
