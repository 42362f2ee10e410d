"""What the walk checks and journals around a call: an ``llm`` step's answer against the trusted
choices the plan named (R4), and a run-time call request as a journal event."""

from __future__ import annotations

import json
from typing import Any

from planlock.approval import ApprovalRequest
from planlock.execution._types import StepCall, StepOutcome
from planlock.tools import choice_problem

__all__ = ["call_request_event", "check_choice", "to_json_text"]


def check_choice(call: StepCall, outcome: StepOutcome) -> StepOutcome:
    """R4 with a trusted result: whatever the model read, its answer must be one of the trusted
    values the plan named; anything else fails the step."""
    if not outcome.ok or not call.step.choices:
        return outcome
    args = call.args
    problem = choice_problem(outcome.output, args.get("choices"), args.get("output_schema"))
    if problem is None:
        return outcome
    return StepOutcome(False, error_kind="invalid_choice", error=problem, attempts=outcome.attempts)


def to_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def call_request_event(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "kind": "call",
        "id": request.id,
        "plan_hash": request.plan_hash,
        "step": request.step_id,
        "args_hash": request.args_hash,
        "args": request.args,
        "provenance": request.provenance,
        "reasons": [r.to_json() for r in request.reasons],
    }
