"""What the walk checks and journals around a call: an ``llm`` step's answer against the trusted
choices the plan named (R4), and a run-time call request as a journal event."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from planlock.approval import ApprovalRequest
from planlock.core import canonical_json, sha256_hex
from planlock.execution._types import StepCall, StepOutcome
from planlock.tools import choice_problem

__all__ = ["BATCH_SUFFIX", "batch_request", "call_request_event", "check_choice", "to_json_text"]

BATCH_SUFFIX = ".items"
"""A loop's request id: its first call's request id and this (engines that keep per-call state
for a request find the first call's)."""


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


def batch_request(asks: list[tuple[StepCall, ApprovalRequest]]) -> ApprovalRequest:
    """One request for several calls of a loop step: a person sees every call (its item and its
    exact arguments: ``args = {"calls": [{"item": i, "args": {...}}, ...]}``) and answers once;
    the answer is bound to all of them by the hash of that whole list. Its reasons are the
    calls' reasons, once each; its id is the first call's with ``BATCH_SUFFIX``. It offers every
    value the calls offer to endorse, once each (an endorsement binds a value and its source, not
    a call)."""
    first = asks[0][1]
    args: dict[str, Any] = {"calls": [{"item": c.item, "args": c.args} for c, _ in asks]}
    reasons = {r.key: r for _, request in asks for r in request.reasons}
    provenance = {f"{c.item}.{p}": labels for c, _ in asks for p, labels in c.provenance.items()}
    return replace(
        first,
        id=f"{first.id}{BATCH_SUFFIX}" if first.id else "",
        args=args,
        args_hash=sha256_hex(canonical_json(args)),
        provenance=provenance,
        reasons=tuple(reasons.values()),
        endorsable=tuple(dict.fromkeys(o for _, request in asks for o in request.endorsable)),
    )


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
