"""The settings a durable worker shares with the others of its queue.

DBOS keeps a queue's per-worker limit (``worker_concurrency``) with the queue, in its system
database, and every worker reloads it at each poll: it is the same for every worker of the
queue. A worker that registered its own ``--concurrency`` would change the limit of the workers
already running, so a worker whose limit differs from that of a live worker is refused.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("dbos")

from dbos import DBOSClient
from test_durable import Site, site

from planlock.durable._client import system_schema
from planlock.durable._workflow import QUEUE_NAME

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # worker processes

__all__ = ["site"]  # the fixture, imported for the tests here


def worker_concurrency(site: Site) -> int | None:
    client = DBOSClient(system_database_url=site.db, dbos_system_schema=system_schema())
    try:
        queue = client.retrieve_queue(QUEUE_NAME)
        assert queue is not None
        return queue.worker_concurrency
    finally:
        client.destroy()


def finished(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    return proc.wait(timeout=timeout)


def test_a_worker_cannot_change_the_limit_of_the_live_workers_of_its_queue(site: Site) -> None:
    first = site.worker("w1", "--concurrency", "1")
    try:
        site.wait_ready("w1")
        assert worker_concurrency(site) == 1
        second = site.worker("w2", "--concurrency", "3")
        assert finished(second) == 2  # a usage error: nothing started
        log = (site.dir / "w2.log").read_text()
        assert "w1" in log
        assert "--concurrency 1" in log
        assert worker_concurrency(site) == 1  # w1 still takes one run at a time
        same = site.worker("w3", "--concurrency", "1")  # the same limit: welcome
        site.wait_ready("w3")
        same.send_signal(signal.SIGTERM)
        assert finished(same) == 0
    finally:
        first.send_signal(signal.SIGTERM)
        assert finished(first) == 0
    # w1 stopped cleanly (its lease ended): no live worker holds the limit, a new one may set it
    third = site.worker("w2", "--concurrency", "3")
    try:
        site.wait_ready("w2")
        assert worker_concurrency(site) == 3
    finally:
        third.send_signal(signal.SIGTERM)
        assert finished(third) == 0


def test_a_worker_without_a_limit_cannot_lift_the_limit_of_a_live_worker(
    site: Site, tmp_path: Path
) -> None:
    first = site.worker("w1", "--concurrency", "2")
    try:
        site.wait_ready("w1")
        second = site.worker("w2")
        assert finished(second) == 2
        assert "--concurrency 2" in (tmp_path / "w2.log").read_text()
        assert worker_concurrency(site) == 2
    finally:
        first.send_signal(signal.SIGTERM)
        assert finished(first) == 0


def test_serve_with_another_limit_is_refused_before_it_listens(site: Site) -> None:
    from test_durable import CLI, TOOLS
    from test_server_support import TOKENS_TOML, free_port

    first = site.worker("w1", "--concurrency", "1")
    try:
        site.wait_ready("w1")
        (site.dir / "tokens.toml").write_text(TOKENS_TOML, encoding="utf-8")
        serve = [*CLI, "serve", "--tools", TOOLS, "--tokens", str(site.dir / "tokens.toml")]
        serve += ["--journal", str(site.journal), "--db", site.db, "--engine", "dbos"]
        serve += ["--workers", "3", "--id", "srv", "--port", str(free_port())]
        res = subprocess.run(serve, capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 2, res.stderr
        assert "w1" in res.stderr
        assert "serve --workers 1" in res.stderr
        assert "planlock serve: http" not in res.stderr  # it never listened
        assert worker_concurrency(site) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        assert finished(first) == 0


def test_a_durable_worker_says_which_options_it_does_not_use(site: Site) -> None:
    proc = site.worker("w1", "--once", "--poll", "1", "--idle-exit", "0.2")
    assert finished(proc) == 0  # --idle-exit, which it uses, stopped it
    log = (site.dir / "w1.log").read_text()
    assert "warning: --once, --poll: only for --engine queue" in log
