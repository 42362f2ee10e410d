"""The durable engine's journal writes: only effects wait for the journal, as in process.

A DBOS worker in this process, over a journal that counts its transactions: a chain of reads
then a send. The reads' events reach the database in shared transactions (before, each event
was one); the send's ``step_started``, and the outputs it reads, are durable before it runs.
(Losing a deferred event in a crash loses nothing: the replay writes it, see
``test_durable_crash``.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from planlock import Journal, Plan, Policy, StepContext, ToolRegistry

pytest.importorskip("dbos")

from test_journal_batch import CountingStore

from planlock.durable._client import DurableWorker, system_database_url
from planlock.durable._workflow import WorkerContext

pytestmark = pytest.mark.integration


def test_reads_are_not_a_transaction_each_and_an_effect_sees_its_inputs_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timer flushes deferred events (a DBOS step outlasts the 2 ms window): what is durable
    # when is decided by the waits alone.
    monkeypatch.setattr("planlock.journal._group.WINDOW", 60.0)
    store = CountingStore(tmp_path / "journal.db")
    journal = Journal(store)
    reg = ToolRegistry()
    seen_at_send: list[list[str]] = []

    @reg.tool(effect="read", trusted_output=True)
    async def probe(x: int = 0) -> int:
        return x + 1

    @reg.tool(effect="send")
    async def send(x: int, ctx: StepContext) -> int:
        seen_at_send.append(store.durable(ctx.run_id))
        return x

    steps: list[dict[str, Any]] = [{"id": "r0", "tool": "probe"}]
    steps += [
        {"id": f"r{i}", "tool": "probe", "args": {"x": f"{{{{steps.r{i - 1}.output}}}}"}}
        for i in range(1, 8)
    ]
    steps.append({"id": "s", "tool": "send", "args": {"x": "{{steps.r7.output}}"}})
    plan = Plan.parse({"goal": "reads then a send", "steps": steps})
    policy = Policy.model_validate({"effects": {"send": "allow"}})
    worker = DurableWorker(
        WorkerContext(reg, journal),
        db_url=system_database_url(str(tmp_path / "dbos.sqlite")),
        executor_id="journal-test",
    )
    worker.start()
    try:

        async def submit() -> str:
            return (await worker.client.submit(plan, reg, policy=policy, by="test")).run_id

        run_id = anyio.run(submit)
        result = worker.client.result(run_id, timeout=120)
        assert result["status"] == "succeeded", result
    finally:
        worker.close()
    deadline = time.monotonic() + 10
    while "run_finished" not in store.durable(run_id) and time.monotonic() < deadline:
        time.sleep(0.01)

    # The send saw its own start and the chain of reads it depends on, durable.
    (seen,) = seen_at_send
    assert seen[-1] == "step_started"
    assert seen.count("step_finished") == 8
    # The reads' starts and outcomes waited for nothing: they reached the database in the
    # transaction of the send's start (before, each event was a transaction of its own).
    with_steps = [b for b in store.batches if "step_started" in b or "step_finished" in b]
    assert with_steps[0] == ["step_started", "step_finished"] * 8 + ["step_started"]
    kinds = store.durable(run_id)
    assert kinds.count("step_started") == kinds.count("step_finished") == 9
    assert kinds[-1] == "run_finished"
    assert journal.verify().ok
