"""``adopt`` (the DBOS engine, issue 13) uses DBOS's public client API only: it lists a dead
executor's unfinished workflows (``DBOSClient.list_workflows``) and resumes each on its queue
(``DBOSClient.resume_workflow``), under an adopt lock, and only while the workflow is still that
executor's. A live worker is refused (``tests/test_durable.py`` covers the liveness leases and a
real worker killed and adopted); here a stand-in for DBOS's client forces the races."""

from __future__ import annotations

import ast
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dbos")

from planlock import Journal
from planlock.durable._client import DurableClient, system_database_url

SRC = Path(__file__).resolve().parents[1] / "src" / "planlock"


@dataclass
class Row:
    """What ``list_workflows`` tells of a workflow (the fields adopt reads)."""

    workflow_id: str
    status: str
    executor_id: str | None
    queue_name: str | None


class FakeDBOS:
    """The two public ``DBOSClient`` methods adopt calls, over rows in memory. A resumed
    workflow is taken at once by a live worker (``w9``); each listing's answer takes a moment to
    come back, so that two adopts running together act on what they saw before the other's."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = {r.workflow_id: r for r in rows}
        self.resumed: list[tuple[str, str | None]] = []
        self.listed = 0
        self.lock = threading.Lock()

    def list_workflows(
        self,
        *,
        workflow_ids: list[str] | None = None,
        status: str | None = None,
        executor_id: str | None = None,
        **_: Any,
    ) -> list[Row]:
        with self.lock:
            self.listed += 1
            found = [
                replace(r)
                for r in self.rows.values()
                if (workflow_ids is None or r.workflow_id in workflow_ids)
                and (status is None or r.status == status)
                and (executor_id is None or r.executor_id == executor_id)
            ]
        time.sleep(0.02)  # the answer travels back while the rows may change
        return found

    def destroy(self) -> None:
        pass

    def resume_workflow(self, workflow_id: str, *, queue_name: str | None = None) -> None:
        with self.lock:
            self.resumed.append((workflow_id, queue_name))
            row = self.rows[workflow_id]
            row.status, row.executor_id = "PENDING", "w9"  # dequeued by a live worker at once


def client_over(journal: Path, tmp_path: Path, fake: FakeDBOS) -> DurableClient:
    client = DurableClient(Journal.open(journal), system_database_url(str(tmp_path / "d.sqlite")))
    client._client = fake  # type: ignore[assignment]  # the stand-in for DBOSClient
    return client


def test_adopt_resumes_the_dead_executors_unfinished_workflows_on_their_queues(
    tmp_path: Path,
) -> None:
    fake = FakeDBOS(
        [
            Row("run-a", "PENDING", "w1", "planlock-runs"),
            Row("run-a.s.call.answer", "PENDING", "w1", "planlock-answers"),
            Row("run-b", "SUCCESS", "w1", "planlock-runs"),  # finished: stays
            Row("run-c", "PENDING", "w2", "planlock-runs"),  # another executor's: stays
        ]
    )
    client = client_over(tmp_path / "j.db", tmp_path, fake)
    assert client.adopt(["w1"]) == ["run-a", "run-a.s.call.answer"]
    assert fake.resumed == [("run-a", "planlock-runs"), ("run-a.s.call.answer", "planlock-answers")]
    assert client.adopt(["w1"]) == []  # taken by a live worker since: nothing to hand back
    client.close()


def test_a_workflow_a_live_worker_took_since_the_listing_is_not_resumed(tmp_path: Path) -> None:
    fake = FakeDBOS([Row("run-a", "PENDING", "w1", "planlock-runs")])
    original = fake.list_workflows

    def listing(**kw: Any) -> list[Row]:
        rows = original(**kw)
        if kw.get("executor_id") == "w1":  # right after the listing, a live worker takes it
            fake.rows["run-a"].executor_id = "w2"
        return rows

    fake.list_workflows = listing  # type: ignore[method-assign]
    client = client_over(tmp_path / "j.db", tmp_path, fake)
    assert client.adopt(["w1"]) == []
    assert fake.resumed == []  # resuming it would have let a second worker run it too
    client.close()


def test_two_adopts_at_once_resume_each_workflow_once(tmp_path: Path) -> None:
    fake = FakeDBOS([Row(f"run-{i}", "PENDING", "w1", "planlock-runs") for i in range(3)])
    clients = [client_over(tmp_path / "j.db", tmp_path, fake) for _ in range(2)]
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.adopt(["w1"]))) for c in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(w for w, _ in fake.resumed) == ["run-0", "run-1", "run-2"]  # each once
    assert sorted(map(len, results)) == [0, 3]  # the second waited, then found nothing left
    for c in clients:
        c.close()


def test_planlock_uses_no_private_dbos_api() -> None:
    """No ``dbos._module`` import and no underscored attribute of a DBOS object (``_sys_db``)."""
    private: list[str] = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dbos."):
                private.append(f"{path.name}: from {node.module} import ...")
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("dbos._")]
                private += [f"{path.name}: import {n}" for n in names]
            if isinstance(node, ast.Attribute) and node.attr in ("_sys_db", "_app_db", "_executor"):
                private.append(f"{path.name}: .{node.attr}")
    assert private == []
