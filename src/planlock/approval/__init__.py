"""planlock.approval: approval requests bound to content, decisions, and approvers (R7)."""

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

__all__ = [
    "ApprovalRequest",
    "Approved",
    "Approver",
    "Decision",
    "Denied",
    "approve_all",
    "ask_approver",
    "auto_approve",
    "binding_problem",
    "now_iso",
]
