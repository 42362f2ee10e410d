"""The asynchronous approval gate: queue the plan, notify, execute on approval.

State lives beside the journal in the same database (an SQLite file, or PostgreSQL):
``runs`` (what was submitted and where it stands) and ``approvals`` (requests and their
answers). The journal stays the append-only record of everything; these tables are the working
state. Every transition is one transaction (``BEGIN IMMEDIATE`` on SQLite, row locks on
PostgreSQL, see ``planlock.db``), so two workers never claim the same run and a grant is used
at most once. A worker checks the stored plan's hash against the grant (and the grant against
the journal) before running anything: a plan edited after approval does not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ulid import ULID

from planlock.agent import noter, prepare
from planlock.approval import PlanGate
from planlock.core import Plan, iso_ms
from planlock.db import Database
from planlock.policy import Policy
from planlock.queue._runs import QueueRuns
from planlock.queue._store import DEFAULT_EXPIRY
from planlock.queue._worker import QueueWorker
from planlock.tools import ToolRegistry

__all__ = ["ApprovalQueue", "Submitted"]


@dataclass(frozen=True)
class Submitted:
    """What ``submit`` stored."""

    run_id: str
    status: str
    """``pending_approval``, or ``approved`` when the policy needs no person."""
    approval_id: str | None


class ApprovalQueue(QueueRuns, QueueWorker):
    """Runs waiting for approval or a worker, and approval requests, in a journal's database:
    submit here, decide (``_decide``), work (``_worker``), list and recover runs (``_runs``),
    read (``_store``)."""

    async def submit(
        self,
        plan: Plan,
        registry: ToolRegistry,
        *,
        inputs: dict[str, Any] | None = None,
        policy: Policy | None = None,
        tools_spec: str = "",
        by: str = "cli",
        expires_in: timedelta = DEFAULT_EXPIRY,
    ) -> Submitted:
        """Validate and assess now (raises PlanInvalid / ApprovalDenied); store the run."""
        policy = policy or Policy()
        prepared = await prepare(plan, registry, self.journal, inputs=inputs, policy=policy)
        gate = PlanGate.of(prepared.plan_request(str(ULID())))
        request, grant = gate.request, gate.decision
        approval_id, needs = request.id, gate.needs_person
        status = "pending_approval" if needs else "approved"
        now = datetime.now(UTC)

        def store(db: Database) -> None:
            db.execute(
                "INSERT INTO runs (run_id, plan, plan_hash, inputs, tools, policy, status, "
                "submitted_by, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    prepared.run_id,
                    plan.canonical_json(),
                    plan.hash,
                    json.dumps(prepared.inputs),
                    tools_spec,
                    policy.model_dump_json(),
                    status,
                    by,
                    iso_ms(now),
                ),
            )
            db.execute(
                "INSERT INTO approvals (id, run_id, kind, plan_hash, request, status, created_at, "
                "expires_at, decided_by, decided_via, decided_at, reason) "
                "VALUES (?, ?, 'plan', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    approval_id,
                    prepared.run_id,
                    plan.hash,
                    json.dumps(request.to_json()),
                    "pending" if grant is None else "approved",
                    iso_ms(now),
                    iso_ms(now + expires_in),
                    None if grant is None else grant.by,
                    None if grant is None else grant.via,
                    None if grant is None else grant.at,
                    None if grant is None else grant.reason,
                ),
            )

        def stored(_: None) -> bool:
            sql = "SELECT 1 FROM runs WHERE run_id = ?"
            return bool(self._value(sql, (prepared.run_id,)) == 1)

        self._transact(store, stored)
        note = noter(self.journal, prepared.run_id)
        gate.open(note, expires_at=iso_ms(now + expires_in))
        note("run_queued", {"status": status, "approval_id": approval_id, "by": by})
        if needs:
            await self._notify(prepared.run_id, request.to_json())
        return Submitted(prepared.run_id, status, approval_id if needs else None)
