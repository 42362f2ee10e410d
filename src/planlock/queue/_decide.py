"""Deciding: a person answers a pending approval request, and may endorse the values a call
offers with the same approval (in the same transaction).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from planlock.approval import (
    Approved,
    Decision,
    Denied,
    Endorsable,
    EndorseAs,
    Endorsement,
    insert_endorsement,
    make_endorsements,
    record_answer,
    value_hash,
)
from planlock.core import canonical_json, iso_ms, sha256_hex
from planlock.db import Database
from planlock.errors import UsageError
from planlock.journal import Event, insert_event
from planlock.queue._store import QueueStore

__all__ = ["QueueDecisions"]


def _endorsements(
    request: dict[str, Any], args_hash: str | None, endorse: EndorseAs, by: str, via: str
) -> tuple[Endorsement, ...]:
    """The endorsements ``endorse`` asks for, from a stored call request's offers; each offer is
    checked against the stored arguments (and those against the request's args hash)."""
    offered = [Endorsable.from_json(o) for o in request.get("endorsable") or []]
    args = request.get("args") or {}
    if args_hash is None or sha256_hex(canonical_json(args)) != args_hash:
        raise UsageError("only a call request with its arguments can endorse values")
    # A loop's request shows several calls (``batch_request``): an offer is one of their values.
    shown = [args, *(c.get("args") or {} for c in args.get("calls") or [] if isinstance(c, dict))]
    for o in offered:
        if not any(o.param in a and value_hash(a[o.param]) == o.value_hash for a in shown):
            raise UsageError(f"the stored request's value of {o.param} does not match its hash")
    return make_endorsements(
        offered,
        endorse.labels(offered),
        by=by,
        via=via,
        any_target=endorse.any_target,
        expires_at=endorse.expires_at,
    )


class QueueDecisions(QueueStore):
    """The queue's answers to approval requests."""

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
        transaction, where the answer and the endorsements are journaled too); the grant
        carries the endorsements made."""
        if not by:
            raise UsageError("an answer needs a name (--as NAME)")
        if not approve and not reason:
            raise UsageError("a denial needs a reason (--reason ...)")
        if endorse is not None and not approve:
            raise UsageError("only an approval can endorse")
        self._expire()
        at = iso_ms()
        journaled: list[Event] = []

        def answer(db: Database) -> tuple[str, str, str | None, Decision, tuple[Endorsement, ...]]:
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
            made: tuple[Endorsement, ...] = ()
            if endorse is not None:
                made = _endorsements(json.loads(stored), args_hash, endorse, by, via)
                for e in made:
                    insert_endorsement(db, e)
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
            # The answer is journaled in the same transaction: a decider killed after it
            # committed cannot leave a decision the journal lacks (a grant the worker, which
            # checks it against the journal, would refuse).
            journaled.clear()

            def note(event_kind: str, data: dict[str, Any]) -> None:
                journaled.append(insert_event(db, run_id, event_kind, data))

            record_answer(note, decision, request_id=approval_id, final=kind == "plan")
            for e in made:  # kept exactly when the answer is: one transaction
                note("endorsement_added", {**e.to_json(), "step": step_id})
            return run_id, kind, step_id, decision, made

        def committed(_: Any) -> bool:
            sql = "SELECT decided_at, decided_by FROM approvals WHERE id = ?"
            row = self._db.execute(sql, (approval_id,)).fetchone()
            return row is not None and tuple(row) == (at, by)

        answered: tuple[str, str, str | None, Decision, tuple[Endorsement, ...]]
        answered = self._transact(answer, committed)
        _, _, _, decision, made = answered
        for event in journaled:
            self.journal.recorded(event)
        if made and isinstance(decision, Approved):
            decision = replace(decision, endorsements=made)
        return decision
