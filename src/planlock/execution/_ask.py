"""A call's checks in the walk (R6, R7): the policy's verdict on the concrete values, a denial
that fails the step, or a request a person answers, bound to exactly the call (or, for a
``for_each`` step, to exactly the calls) it shows. Journaling the answer is the waiter's job (the
queue records it when a person decides); the binding check is made here, for every engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from planlock.approval import ApprovalRequest, Denied, binding_problem
from planlock.execution._calls import batch_request, call_request_event
from planlock.execution._types import (
    CheckCall,
    Record,
    StepCall,
    StepOutcome,
    WaitForApproval,
)

__all__ = ["Checks"]


class Checks:
    """``allowed(call)`` for one call; ``items(step_id, calls)`` for a loop's calls together.
    ``fail(step_id, outcome)`` fails the step (the walk's)."""

    def __init__(
        self,
        check_call: CheckCall | None,
        record: Record,
        wait_for_approval: WaitForApproval,
        fail: Callable[[str, StepOutcome], Awaitable[None]],
    ) -> None:
        self.check_call = check_call
        self.record = record
        self.wait_for_approval = wait_for_approval
        self.fail = fail

    async def allowed(self, call: StepCall) -> bool:
        """A denial stops the call; a request waits for an answer bound to this exact call."""
        return await self._settle(call.step.id, await self._verdict(call))

    async def items(self, sid: str, calls: list[StepCall]) -> bool:
        """A loop's calls, checked before any of them runs: a denial of any fails the step (no
        item has run), and the calls that need a person are asked about together, in one
        request bound to all of them (``batch_request``), so a person approves the loop once."""
        checks = [await self._verdict(call) for call in calls]
        denied = [c for c in checks if isinstance(c, Denied)]
        if denied:
            return await self._settle(sid, denied[0])
        asks = [
            (call, c)
            for call, c in zip(calls, checks, strict=True)
            if isinstance(c, ApprovalRequest)
        ]
        if len(asks) > 1:
            return await self._settle(sid, batch_request(asks))
        return all([await self._settle(sid, c) for _, c in asks])

    async def _verdict(self, call: StepCall) -> ApprovalRequest | Denied | None:
        verdict = self.check_call(call) if self.check_call else None
        return await verdict if inspect.isawaitable(verdict) else verdict

    async def _settle(self, sid: str, check: ApprovalRequest | Denied | None) -> bool:
        """Act on a call's check: run (None), fail (a denial), or ask and wait for the answer."""
        if check is None:
            return True
        if isinstance(check, Denied):
            await self.record("approval_denied", check.to_json())
            await self.fail(sid, StepOutcome(False, error_kind="denied", error=check.reason))
            return False
        await self.record("approval_requested", call_request_event(check))
        decision = await self.wait_for_approval(check)
        problem = binding_problem(decision, check)
        if problem is not None:
            await self.record("approval_refused", {**decision.to_json(), "problem": problem})
            refused = StepOutcome(False, error_kind="approval_refused", error=problem)
            await self.fail(sid, refused)
            return False
        if not decision.approved:
            await self.fail(sid, StepOutcome(False, error_kind="denied", error=decision.reason))
            return False
        return True
