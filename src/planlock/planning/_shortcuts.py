"""``plan`` and ``plan_sync``: the function forms of ``Planner``, one planner per call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planlock.core import Plan, run_blocking
from planlock.journal import Journal
from planlock.llm import LLM, ProgressCallback
from planlock.planning._planner import Planner
from planlock.tools import ToolRegistry

__all__ = ["plan", "plan_sync"]


async def plan(
    goal: str,
    registry: ToolRegistry,
    llm: LLM,
    *,
    context: Mapping[str, Any] | None = None,
    journal: Journal | None = None,
    run_id: str = "planner",
    max_attempts: int = 3,
    max_tokens: int = 1024,
    timeout_s: float | None = 120.0,
    on_progress: ProgressCallback | None = None,
) -> Plan:
    """Plan for ``goal`` over ``registry`` with ``llm`` (see ``Planner``)."""
    planner = Planner(
        llm,
        registry,
        max_attempts=max_attempts,
        journal=journal,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        on_progress=on_progress,
    )
    return await planner.plan(goal, context, run_id=run_id)


def plan_sync(goal: str, registry: ToolRegistry, llm: LLM, **kwargs: Any) -> Plan:
    """``plan`` for synchronous code. Refuses to run inside a running event loop."""

    async def main() -> Plan:
        return await plan(goal, registry, llm, **kwargs)

    return run_blocking(main, "plan_sync() was called inside an event loop; await plan() instead")
