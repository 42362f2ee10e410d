"""planlock.approval: approval requests bound to content, decisions, approvers, and the one
plan-approval path every engine takes (R7)."""

from planlock.approval._approval import (
    ApprovalRequest,
    Approved,
    Approver,
    Decision,
    Denied,
    approve_all,
    ask_approver,
    auto_approve,
    binding_problem,
    now_iso,
)
from planlock.approval._gate import (
    AUTO_REASON,
    GateOutcome,
    Note,
    PlanGate,
    admit_grant,
    record_answer,
    refuse_grant,
    settle_plan_answer,
)

__all__ = [
    "AUTO_REASON",
    "ApprovalRequest",
    "Approved",
    "Approver",
    "Decision",
    "Denied",
    "GateOutcome",
    "Note",
    "PlanGate",
    "admit_grant",
    "approve_all",
    "ask_approver",
    "auto_approve",
    "binding_problem",
    "now_iso",
    "record_answer",
    "refuse_grant",
    "settle_plan_answer",
]
