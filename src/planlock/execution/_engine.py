"""The engine plug point: what an engine supplies to the DAG walk.

``walk`` (in ``_walk``) is the one engine-agnostic DAG walk. An engine gives it three things:
*run a step*, *wait for an approval* and *record an event*. ``InProcessEngine`` runs steps in this
process (the default, and what unit tests use); the DBOS engine (``_durable``) runs each step as a
durable DBOS step and waits for approvals in a DBOS step (``DBOS.get_event``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from planlock.approval import ApprovalRequest, Decision, Denied
from planlock.execution._inprocess import InProcessEngine
from planlock.execution._types import Record, RunResult, StepCall, StepOutcome, WaitForApproval
from planlock.execution._walk import walk
from planlock.validation import Analysis

__all__ = ["Engine", "LocalEngine", "walk_with"]


@runtime_checkable
class Engine(Protocol):
    """Runs a plan's steps for ``walk``: three methods, nothing else."""

    async def run_step(self, call: StepCall) -> StepOutcome:
        """Run one resolved call and report what it produced (never raises for a tool error)."""
        ...

    async def wait_for_approval(self, request: ApprovalRequest) -> Decision:
        """Wait for a person's answer to a run-time call request (bound to it, R7)."""
        ...

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        """Write one journal event for the run."""
        ...


@dataclass(frozen=True)
class LocalEngine:
    """The in-process engine as an ``Engine``: ``InProcessEngine`` runs the steps, ``waiter``
    answers run-time requests (e.g. ``in_process_waiter``), ``recorder`` journals."""

    steps: InProcessEngine
    waiter: WaitForApproval
    recorder: Record

    async def run_step(self, call: StepCall) -> StepOutcome:
        return await self.steps.run_step(call)

    async def wait_for_approval(self, request: ApprovalRequest) -> Decision:
        return await self.waiter(request)

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        await self.recorder(kind, data)


async def walk_with(
    engine: Engine,
    analysis: Analysis,
    inputs: Mapping[str, Any],
    *,
    run_id: str,
    check_call: Any = None,
    concurrency: int = 16,
    trusted_steps: frozenset[str] = frozenset(),
) -> RunResult:
    """``walk`` with the three functions taken from ``engine``."""
    checker = check_call if check_call is not None else _no_check
    return await walk(
        analysis,
        inputs,
        run_id=run_id,
        run_step=engine.run_step,
        wait_for_approval=engine.wait_for_approval,
        record=engine.record,
        check_call=checker,
        concurrency=concurrency,
        trusted_steps=trusted_steps,
    )


def _no_check(_call: StepCall) -> ApprovalRequest | Denied | None:
    return None
