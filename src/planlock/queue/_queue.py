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
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from ulid import ULID

from planlock.agent import Prepared, execute, noter, prepare
from planlock.approval import (
    ApprovalRequest,
    Approved,
    Decision,
    Denied,
    Endorsable,
    EndorseAs,
    Endorsement,
    PlanGate,
    SQLEndorsements,
    insert_endorsement,
    make_endorsements,
    now_iso,
    record_added,
    record_answer,
    refuse_grant,
    value_hash,
)
from planlock.core import Plan, canonical_json, sha256_hex
from planlock.db import Database
from planlock.errors import ApprovalDenied, ApprovalMismatch, PlanInvalid, UsageError
from planlock.execution import RunResult
from planlock.journal import Journal, database_of
from planlock.llm import LLM
from planlock.policy import Policy
from planlock.queue._notify import Notifier, approval_message
from planlock.tools import ToolRegistry

__all__ = ["ApprovalQueue", "Submitted", "parse_duration"]

DEFAULT_EXPIRY = timedelta(days=7)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d`` or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        raise UsageError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 7d)") from None


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def _endorsements(
    request: dict[str, Any], args_hash: str | None, endorse: EndorseAs, by: str, via: str
) -> tuple[Endorsement, ...]:
    """The endorsements ``endorse`` asks for, from a stored call request's offers; each offer is
    checked against the stored arguments (and those against the request's args hash)."""
    offered = [Endorsable.from_json(o) for o in request.get("endorsable") or []]
    args = request.get("args") or {}
    if args_hash is None or sha256_hex(canonical_json(args)) != args_hash:
        raise UsageError("only a call request with its arguments can endorse values")
    for o in offered:
        if o.param not in args or value_hash(args[o.param]) != o.value_hash:
            raise UsageError(f"the stored request's value of {o.param} does not match its hash")
    return make_endorsements(
        offered,
        endorse.labels(offered),
        by=by,
        via=via,
        any_target=endorse.any_target,
        expires_at=endorse.expires_at,
    )


@dataclass(frozen=True)
class Submitted:
    """What ``submit`` stored."""

    run_id: str
    status: str
    """``pending_approval``, or ``approved`` when the policy needs no person."""
    approval_id: str | None


class ApprovalQueue:
    """Runs waiting for approval or a worker, and approval requests, in a journal's database."""

    def __init__(self, journal: Journal, notifier: Notifier | None = None) -> None:
        self._db: Database = database_of(journal.store)
        self.journal = journal
        self.notifier = notifier
        self.endorsements = SQLEndorsements(self._db)
        """The values people endorsed, beside the queue: a worker's runs use them."""

    def _tx(self) -> AbstractContextManager[Database]:
        return self._db.tx()

    # -- submitting -----------------------------------------------------------------------

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
        with self._tx() as db:
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
                    _iso(now),
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
                    _iso(now),
                    _iso(now + expires_in),
                    None if grant is None else grant.by,
                    None if grant is None else grant.via,
                    None if grant is None else grant.at,
                    None if grant is None else grant.reason,
                ),
            )
        note = noter(self.journal, prepared.run_id)
        gate.open(note, expires_at=_iso(now + expires_in))
        note("run_queued", {"status": status, "approval_id": approval_id, "by": by})
        if needs:
            await self._notify(prepared.run_id, request.to_json())
        return Submitted(prepared.run_id, status, approval_id if needs else None)

    async def _notify(self, run_id: str, request: dict[str, Any]) -> None:
        if self.notifier is None:
            return
        note = noter(self.journal, run_id)
        try:
            self.notifier.notify(approval_message(request))
        except Exception as exc:  # a notifier failure must not lose the request
            note("notification_failed", {"approval_id": request["id"], "error": str(exc)})
        else:
            note("notification_sent", {"approval_id": request["id"]})

    # -- reading ----------------------------------------------------------------------------

    def _expire(self) -> None:
        now = now_iso()
        expired = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, run_id FROM approvals WHERE status = 'pending' AND expires_at < ?",
                (now,),
            ).fetchall()
            for approval_id, run_id in rows:
                cur = db.execute(
                    "UPDATE approvals SET status = 'expired' WHERE id = ? AND status = 'pending'",
                    (approval_id,),
                )
                if cur.rowcount != 1:
                    continue  # another process expired it first (and journals it)
                expired.append((approval_id, run_id))
                db.execute(
                    "UPDATE runs SET status = 'expired' WHERE run_id = ? AND status IN "
                    "('pending_approval', 'waiting_approval')",
                    (run_id,),
                )
        for approval_id, run_id in expired:
            self.journal.record(run_id, "approval_expired", {"id": approval_id})

    def pending(self) -> list[dict[str, Any]]:
        """Approval requests waiting for a person, oldest first."""
        self._expire()
        rows = self._db.execute(
            "SELECT id FROM approvals WHERE status = 'pending' ORDER BY created_at, id"
        ).fetchall()
        return [self.get(r[0]) for r in rows]

    def get(self, approval_id: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT id, run_id, kind, plan_hash, step_id, args_hash, request, status, created_at, "
            "expires_at, decided_by, decided_via, decided_at, reason, used_at "
            "FROM approvals WHERE id = ?",
            (approval_id,),
        ).fetchone()
        if row is None:
            raise UsageError(f"no approval request {approval_id}")
        keys = [
            "id",
            "run_id",
            "kind",
            "plan_hash",
            "step_id",
            "args_hash",
            "request",
            "status",
            "created_at",
            "expires_at",
            "decided_by",
            "decided_via",
            "decided_at",
            "reason",
            "used_at",
        ]
        out = dict(zip(keys, row, strict=True))
        out["request"] = json.loads(out["request"])
        inputs = self._db.execute(
            "SELECT inputs FROM runs WHERE run_id = ?", (out["run_id"],)
        ).fetchone()
        out["inputs"] = json.loads(inputs[0]) if inputs else {}
        return out

    def run_status(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    # -- deciding ---------------------------------------------------------------------------

    def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str = "",
        via: str = "cli",
        endorse: EndorseAs | None = None,
    ) -> Decision:
        """Answer a pending request. Unknown, already answered, used or expired: UsageError.
        With ``endorse``, approving a call also endorses the values it offers (in the same
        transaction); the grant carries the endorsements made."""
        if not by:
            raise UsageError("an answer needs a name (--as NAME)")
        if not approve and not reason:
            raise UsageError("a denial needs a reason (--reason ...)")
        if endorse is not None and not approve:
            raise UsageError("only an approval can endorse")
        self._expire()
        made: tuple[Endorsement, ...] = ()
        with self._tx() as db:
            row = db.execute(
                "SELECT run_id, kind, plan_hash, step_id, args_hash, status, request "
                "FROM approvals WHERE id = ?" + db.lock,
                (approval_id,),
            ).fetchone()
            if row is None:
                raise UsageError(f"no approval request {approval_id}")
            run_id, kind, plan_hash, step_id, args_hash, status, stored = row
            if status != "pending":
                raise UsageError(f"approval request {approval_id} is {status}, not pending")
            if endorse is not None:
                made = _endorsements(json.loads(stored), args_hash, endorse, by, via)
                for e in made:
                    insert_endorsement(db, e)
            at = now_iso()
            decision: Decision = (
                Approved(plan_hash, by, via, reason, at, step_id, args_hash)
                if approve
                else Denied(plan_hash, by, via, reason, at, step_id, args_hash)
            )
            db.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_via = ?, decided_at = ?, "
                "reason = ? WHERE id = ?",
                ("approved" if approve else "denied", by, via, at, reason, approval_id),
            )
            if kind == "plan":
                db.execute(
                    "UPDATE runs SET status = ? WHERE run_id = ?",
                    ("approved" if approve else "denied", run_id),
                )
        note = noter(self.journal, run_id)
        record_answer(note, decision, request_id=approval_id, final=kind == "plan")
        for e in made:
            record_added(self.journal, run_id, e, step=step_id)
        if made and isinstance(decision, Approved):
            decision = replace(decision, endorsements=made)
        return decision

    # -- working ----------------------------------------------------------------------------

    def claim(self, worker_id: str) -> str | None:
        """Take the oldest approved run; exactly one worker gets each run."""
        with self._tx() as db:
            row = db.execute(
                "SELECT run_id FROM runs WHERE status = 'approved' "  # noqa: S608  (a fixed lock clause)
                "ORDER BY submitted_at, run_id LIMIT 1" + db.skip_locked
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', claimed_by = ?, claimed_at = ? "
                "WHERE run_id = ?",
                (worker_id, now_iso(), row[0]),
            )
        self.journal.record(row[0], "run_claimed", {"worker": worker_id})
        return str(row[0])

    def _use_plan_grant(self, run_id: str) -> Approved:
        """Consume the run's plan grant (single use) and check it against the journal."""
        try:
            return self._take_plan_grant(run_id)
        except ApprovalMismatch as exc:
            refuse_grant(noter(self.journal, run_id), str(exc))

    def _take_plan_grant(self, run_id: str) -> Approved:
        with self._tx() as db:
            row = db.execute(
                "SELECT id, plan_hash, decided_by, decided_via, decided_at, reason, expires_at "
                "FROM approvals WHERE run_id = ? AND kind = 'plan' AND status = 'approved'"
                + db.lock,
                (run_id,),
            ).fetchone()
            if row is None:
                raise ApprovalMismatch(f"run {run_id} has no unused plan grant")
            approval_id, plan_hash, by, via, at, reason, expires_at = row
            if expires_at and expires_at < now_iso():
                db.execute("UPDATE approvals SET status = 'expired' WHERE id = ?", (approval_id,))
                raise ApprovalMismatch(f"grant {approval_id} expired at {expires_at}")
            db.execute(
                "UPDATE approvals SET status = 'used', used_at = ? WHERE id = ?",
                (now_iso(), approval_id),
            )
        journaled = [
            e
            for e in self.journal.events(run_id)
            if e.kind == "approval_granted" and e.data.get("id") == approval_id
        ]
        if not journaled or journaled[-1].data.get("plan_hash") != plan_hash:
            raise ApprovalMismatch(f"grant {approval_id} does not match the journal")
        self.journal.record(run_id, "approval_used", {"id": approval_id, "plan_hash": plan_hash})
        return Approved(plan_hash, by, via, reason or "", at)

    async def work_one(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        concurrency: int = 16,
    ) -> RunResult | str | None:
        """Claim and execute one approved run. Returns its result, a status string when it
        could not run (``refused``, ``rejected``), or None when nothing was waiting."""
        run_id = self.claim(worker_id)
        if run_id is None:
            return None
        row = self._db.execute(
            "SELECT plan, inputs, policy FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        try:
            plan = Plan.parse(row[0])
            policy = Policy.model_validate_json(row[2])
            prepared = await prepare(
                plan,
                registry,
                self.journal,
                inputs=json.loads(row[1]),
                policy=policy,
                run_id=run_id,
                announce=False,
            )
            grant = self._use_plan_grant(run_id)
            result = await execute(
                prepared,
                grant,
                self.journal,
                wait_for_approval=self._waiter(prepared, poll),
                llm=llm,
                concurrency=concurrency,
                endorsements=self.endorsements,
            )
        except PlanInvalid:
            self._finish(run_id, "rejected")  # prepare journaled the issues
            return "rejected"
        except (ApprovalDenied, ApprovalMismatch):
            self._finish(run_id, "refused")  # journaled where it was decided
            return "refused"
        self._finish(run_id, result.status)
        return result

    def _finish(self, run_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                (status, now_iso(), run_id),
            )

    def _waiter(self, prepared: Prepared, poll: float) -> Any:
        """Store a call request, notify, and wait (polling) for a person's answer."""

        async def wait(request: ApprovalRequest) -> Decision:
            now = datetime.now(UTC)
            with self._tx() as db:
                db.execute(
                    "INSERT INTO approvals (id, run_id, kind, plan_hash, step_id, args_hash, "
                    "request, status, created_at, expires_at) "
                    "VALUES (?, ?, 'call', ?, ?, ?, ?, 'pending', ?, ?)",
                    (
                        request.id,
                        prepared.run_id,
                        request.plan_hash,
                        request.step_id,
                        request.args_hash,
                        json.dumps(request.to_json()),
                        _iso(now),
                        _iso(now + DEFAULT_EXPIRY),
                    ),
                )
                db.execute(
                    "UPDATE runs SET status = 'waiting_approval' WHERE run_id = ?",
                    (prepared.run_id,),
                )
            await self._notify(prepared.run_id, request.to_json())
            while True:
                self._expire()
                row = self._db.execute(
                    "SELECT status, decided_by, decided_via, decided_at, reason "
                    "FROM approvals WHERE id = ?",
                    (request.id,),
                ).fetchone()
                status = row[0]
                if status == "approved":
                    with self._tx() as db:
                        cur = db.execute(
                            "UPDATE approvals SET status = 'used', used_at = ? "
                            "WHERE id = ? AND status = 'approved'",
                            (now_iso(), request.id),
                        )
                        db.execute(
                            "UPDATE runs SET status = 'running' WHERE run_id = ?",
                            (prepared.run_id,),
                        )
                    if cur.rowcount != 1:
                        return request.deny("policy", "queue", "the grant was already used")
                    self.journal.record(prepared.run_id, "approval_used", {"id": request.id})
                    return Approved(
                        request.plan_hash,
                        row[1],
                        row[2],
                        row[4] or "",
                        row[3],
                        request.step_id,
                        request.args_hash,
                    )
                if status in ("denied", "expired"):
                    reason = row[4] if status == "denied" else "the request expired"
                    return Denied(
                        request.plan_hash,
                        row[1] or "policy",
                        row[2] or "queue",
                        reason,
                        row[3] or now_iso(),
                        request.step_id,
                        request.args_hash,
                    )
                await anyio.sleep(poll)

        return wait

    async def work(
        self,
        registry: ToolRegistry,
        worker_id: str,
        *,
        llm: LLM | None = None,
        poll: float = 0.5,
        once: bool = False,
        idle_exit: float | None = None,
    ) -> int:
        """Execute approved runs until stopped; ``once`` drains what is approved now and returns.
        ``idle_exit`` returns after that many seconds with nothing to do. Returns runs executed."""
        done = 0
        idle_since = time.monotonic()
        while True:
            outcome = await self.work_one(registry, worker_id, llm=llm, poll=poll)
            if outcome is not None:
                done += 1
                idle_since = time.monotonic()
                continue
            if once or (idle_exit is not None and time.monotonic() - idle_since >= idle_exit):
                return done
            await anyio.sleep(poll)

    def close(self) -> None:
        self._db.close()
