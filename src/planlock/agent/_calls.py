"""The run-time checks of each call (R6): the policy on the concrete values, with endorsed values
settled (``call_checker``), and how a run in process waits for a call's answer
(``in_process_waiter``), keeping the values a person endorsed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ulid import ULID

from planlock.agent._prepare import Prepared, noter
from planlock.approval import (
    ApprovalRequest,
    Approver,
    Decision,
    Denied,
    EndorsementStore,
    Note,
    ask_approver,
    binding_problem,
    bound_endorsements,
    offers,
    record_answer,
    settle,
)
from planlock.errors import ApprovalRequired
from planlock.execution import StepCall
from planlock.journal import Journal
from planlock.policy import Verdict, evaluate, fixed_verdict
from planlock.validation import label_trust

__all__ = ["call_checker", "in_process_waiter", "resume_request"]


def call_checker(
    prepared: Prepared,
    endorsements: EndorsementStore | None = None,
    note: Note | None = None,
) -> Callable[[StepCall], ApprovalRequest | Denied | None]:
    """The run-time policy check (R6): the same rules, now on the concrete values. With
    ``endorsements``, an untrusted or chosen value in a sensitive parameter that a person
    endorsed (same value hash and source, and target if set) is allowed without asking; each
    endorsement used is journaled through ``note`` (``endorsement_used``)."""
    is_trusted, describe = label_trust(prepared.analysis)
    steps = prepared.analysis.steps
    fixed: dict[tuple[str, frozenset[str]], Verdict | None] = {}
    """Per tool and marks, the verdict when the call's values cannot change it
    (``fixed_verdict``): the policy compiled once per plan."""

    def check(call: StepCall) -> ApprovalRequest | Denied | None:
        step = call.step
        tool = step.tool
        key = (tool.name, step.marks)
        if key not in fixed:
            fixed[key] = fixed_verdict(prepared.policy, tool, is_trusted, describe, step.marks)
        verdict = fixed[key]
        if verdict is not None and not verdict.concerns:
            return None  # allowed whatever the values: no request, no endorsement to settle
        if verdict is None:
            verdict = evaluate(
                prepared.policy,
                tool,
                call.args,
                call.provenance,
                is_trusted,
                describe,
                decided_by=step.marks,
            )
        base = prepared.plan_request()
        if verdict.action == "deny":
            why = "; ".join(r.message for r in verdict.concerns if r.action == "deny")
            return Denied(
                base.plan_hash,
                "policy",
                "policy",
                why,
                step_id=call.step.id,
                args_hash=call.args_hash,
            )
        covered = prepared.report.covered(call.step.id)
        concerns = verdict.concerns
        offered = offers(steps, call.step, call.args, concerns)
        if endorsements is not None and offered:
            concerns, used = settle(endorsements, offered, concerns)
            if used and note is not None:
                for offer, e in used:
                    note(
                        "endorsement_used",
                        {
                            "step": call.step.id,
                            "item": call.item,
                            "args_hash": call.args_hash,
                            "param": offer.param,
                            "target": offer.target,
                            "endorsement": e.id,
                            "value_hash": e.value_hash,
                            "source": e.source,
                            "label": e.label,
                            "by": e.by,
                        },
                    )
            left = {r.params[0] for r in concerns if r.action != "allow" and len(r.params) == 1}
            offered = tuple(o for o in offered if o.param in left)
        pending = tuple(
            r
            for r in concerns
            if r.action == "require_approval" and (r.at_call or r.key not in covered)
        )
        if not pending:
            return None
        return ApprovalRequest(
            prepared.run_id,
            base.plan,
            base.plan_hash,
            prepared.report,
            step_id=call.step.id,
            args_hash=call.args_hash,
            args=call.args,
            provenance=call.provenance,
            reasons=pending,
            id=str(ULID()),
            endorsable=offered,
        )

    return check


def in_process_waiter(
    approver: Approver,
    journal: Journal,
    run_id: str,
    endorsements: EndorsementStore | None = None,
) -> Callable[[ApprovalRequest], Awaitable[Decision]]:
    """Ask ``approver`` about a call and journal the answer; an approver that cannot ask a
    person (``auto``) denies. Values the person endorsed with a grant
    (``ApprovalRequest.endorse``) and bound to the request are kept in ``endorsements`` and
    journaled (``endorsement_added``)."""
    note = noter(journal, run_id)

    async def wait(request: ApprovalRequest) -> Decision:
        try:
            decision = await ask_approver(approver, request)
        except ApprovalRequired as exc:
            decision = request.deny("policy", "auto", str(exc))
        if binding_problem(decision, request) is None:  # a mismatch is journaled as refused
            record_answer(note, decision, request_id=request.id)
        if endorsements is not None:
            for e in bound_endorsements(decision, request):
                endorsements.add(e)
                note("endorsement_added", {**e.to_json(), "step": request.step_id})
        return decision

    return wait


def resume_request(
    prepared: Prepared, call: StepCall, round_no: int, request_id: str
) -> tuple[ApprovalRequest, dict[str, Any]]:
    """The request a durable engine stores when a non-idempotent call was interrupted after it
    started (R11): the request, and its stored form (kind ``resume``, the round, the reason)."""
    sid = call.step.id
    base = prepared.plan_request()
    why = (
        f"step {sid} (tool {call.step.tool.name}, not idempotent) was interrupted after it "
        "started; it may or may not have taken effect. Approve to run it again, deny to mark "
        "it failed."
    )
    request = ApprovalRequest(
        prepared.run_id,
        base.plan,
        base.plan_hash,
        base.report,
        step_id=sid,
        args_hash=call.args_hash,
        args=call.args,
        provenance=call.provenance,
        id=request_id,
    )
    reason = {"key": "resume_uncertain_step", "action": "require_approval", "message": why}
    stored = {**request.to_json(), "kind": "resume", "round": round_no, "reasons": [reason]}
    if call.item is not None:
        stored["item"] = call.item
    return request, stored
