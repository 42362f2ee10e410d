"""The plan-approval path, written once for every engine (R7).

Whichever engine runs a plan (in process, the approval queue, DBOS), the plan's approval is
decided and journaled the same way:

1. ``risk_assessed``; a plan the policy denies outright gets ``approval_denied`` and the run ends
   before anyone is asked (``PlanGate.assessed``);
2. a plan with nothing that needs a person is approved by the policy (``approval_granted``); any
   other plan gets ``approval_requested`` (``PlanGate.open``);
3. an answer is journaled as ``approval_granted`` / ``approval_denied`` (``record_answer``); an
   answer bound to other content is refused (``settle_plan_answer``);
4. before anything runs, the grant is checked against the plan about to run (``admit_grant``);
   a refusal is ``approval_refused``, and the run ends (``refuse_grant``).

An engine supplies only how it waits for a person (an approver callable, a queue row, a DBOS
message), where it keeps its state, and ``note``: how it writes an event of the run to the
journal (``Journal.record`` bound to the run, or the durable engine's once-only recorder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from planlock.approval._approval import (
    ApprovalRequest,
    Approved,
    Decision,
    Denied,
    binding_problem,
)
from planlock.errors import ApprovalDenied, ApprovalMismatch

__all__ = [
    "AUTO_REASON",
    "GateOutcome",
    "Note",
    "PlanGate",
    "admit_grant",
    "record_answer",
    "refuse_grant",
    "settle_plan_answer",
]

Note = Callable[[str, dict[str, Any]], object]
"""Writes one event of the run: ``note(kind, data)``."""

GateOutcome = Literal["refused", "auto_approved", "needs_person"]

AUTO_REASON = "nothing in this plan needs a person"
"""The reason of the policy's grant for a plan with nothing that needs a person."""


@dataclass(frozen=True)
class PlanGate:
    """Who has to answer a plan's approval request, by the policy's risk report."""

    request: ApprovalRequest
    """The plan request (with the id an engine stores it under, if any)."""
    outcome: GateOutcome
    """``refused`` by the policy, ``auto_approved`` by the policy, or ``needs_person``."""
    decision: Decision | None = None
    """The policy's own answer: its denial (refused) or its grant (auto-approved); None when a
    person has to answer."""

    @classmethod
    def of(cls, request: ApprovalRequest, *, auto_reason: str = AUTO_REASON) -> PlanGate:
        report = request.report
        if report.denied:
            reasons = "; ".join(s.reason for s in report.denied)
            return cls(request, "refused", request.deny("policy", "policy", reasons))
        if not report.needs_person:
            return cls(request, "auto_approved", request.approve("policy", "auto", auto_reason))
        return cls(request, "needs_person")

    @property
    def needs_person(self) -> bool:
        return self.outcome == "needs_person"

    def assessed(self, note: Note, *, final: bool = True) -> None:
        """Journal the risk report; a plan the policy refuses is denied (``approval_denied``, and
        ``run_finished`` when ``final``) and ApprovalDenied is raised."""
        note("risk_assessed", self.request.report.to_json())
        if isinstance(self.decision, Denied):
            record_answer(note, self.decision, request_id=self.request.id, final=final)
            raise ApprovalDenied(self.decision)

    def open(self, note: Note, **details: Any) -> Approved | None:
        """Journal the policy's grant and return it, or journal that a person is asked
        (``approval_requested``, with ``details``) and return None."""
        if isinstance(self.decision, Denied):
            raise ApprovalDenied(self.decision)  # ``assessed`` journaled it
        if self.decision is not None:
            record_answer(note, self.decision, request_id=self.request.id)
            return self.decision
        report, request = self.request.report, self.request
        note(
            "approval_requested",
            {
                "kind": "plan",
                **({"id": request.id} if request.id else {}),
                "plan_hash": request.plan_hash,
                "needs_approval": [s.to_json() for s in report.needs_plan_approval],
                "call_approvals": [s.step_id for s in report.call_approvals],
                **details,
            },
        )
        return None


def record_answer(
    note: Note, decision: Decision, *, request_id: str = "", final: bool = False
) -> None:
    """Journal an answer (``approval_granted`` / ``approval_denied``, with the request's id when
    it has one). With ``final``, a denial ends the run (a denied plan)."""
    data = decision.to_json()
    if request_id:
        data = {**data, "id": request_id}
    note("approval_granted" if decision.approved else "approval_denied", data)
    if final and not decision.approved:
        note("run_finished", {"status": "denied"})


def settle_plan_answer(note: Note, request: ApprovalRequest, decision: Decision) -> Approved:
    """Journal the answer to a plan request and return the grant. An answer bound to anything
    else is refused (ApprovalMismatch); a denial raises ApprovalDenied. Both end the run."""
    problem = binding_problem(decision, request)
    if problem is not None:
        refuse_grant(note, problem, decision)
    record_answer(note, decision, request_id=request.id, final=True)
    if isinstance(decision, Denied):
        raise ApprovalDenied(decision)
    return decision


def admit_grant(note: Note, grant: Decision, request: ApprovalRequest) -> Approved:
    """Check the plan grant against the plan about to run (R7); refuse one that does not fit."""
    problem = binding_problem(grant, request)
    if problem is not None or not isinstance(grant, Approved):
        refuse_grant(note, problem or "the plan was not approved", grant)
    return grant


def refuse_grant(note: Note, problem: str, decision: Decision | None = None) -> NoReturn:
    """Journal a refused grant (``approval_refused``) and the end of the run; raise
    ApprovalMismatch."""
    data = {"problem": problem} if decision is None else {**decision.to_json(), "problem": problem}
    note("approval_refused", data)
    note("run_finished", {"status": "refused"})
    raise ApprovalMismatch(problem)
