"""Checkpoint reviews with the real embedded model (integration): the revision is sensible.

The planner model at a checkpoint sees typed values only (here a trusted tool's boolean and
integer); a revision that stays inside the approved envelope proceeds without asking anyone.
The model's reviews come through ``local_plans``: the reply it gave to this exact request when
``tests/data/local-plans.json`` was recorded (``test_model_recordings.py`` fails in the fast tier
when the request changes; ``PLANLOCK_FRESH_PLANS=1`` asks the model again).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ReplayLLM

import planlock
from planlock import ApprovalRequest, Decision, Plan, RunResult, ToolRegistry, run_sync
from planlock.testing import capture_journal

pytestmark = pytest.mark.integration  # and `model`: `local_plans` (conftest) loads it once


class Counting:
    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    def __call__(self, request: ApprovalRequest) -> Decision:
        self.requests.append(request)
        return request.approve("alice", "test")


def rooms(free: dict[str, bool], log: list[str]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read", trusted_output=True)
    def room_is_free(room: str) -> bool:
        """Whether a meeting room is free at 10:00 tomorrow."""
        log.append(f"room_is_free:{room}")
        return free[room]

    @reg.tool(effect="write")
    def book_room(room: str) -> str:
        """Book a meeting room for 10:00 tomorrow."""
        log.append(f"book_room:{room}")
        return f"booked {room}"

    return reg


ROOM_PLAN = {
    "version": 1,
    "goal": "Book the Oak room for 10:00 tomorrow if it is free; otherwise book the Pine room.",
    "steps": [
        {"id": "1", "tool": "room_is_free", "args": {"room": "Oak"}, "checkpoint": True},
        {"id": "2", "tool": "book_room", "args": {"room": "Oak"}},
    ],
}


def busy_room(llm: Any, log: list[str] | None = None, **kwargs: Any) -> RunResult:
    """``ROOM_PLAN`` with the Oak room taken: its checkpoint asks ``llm`` for a review (also
    what ``test_local_model`` asks the model afresh, and ``test_model_recordings`` checks)."""
    return run_sync(
        Plan.parse(ROOM_PLAN),
        rooms({"Oak": False, "Pine": True}, [] if log is None else log),
        llm=llm,
        replanner=llm,
        **{"approver": planlock.approve_all(), **kwargs},
    )


def test_a_busy_room_is_replaced_by_the_goals_fallback_inside_the_envelope(
    local_plans: ReplayLLM,
) -> None:
    log: list[str] = []
    approver = Counting()
    with capture_journal() as journal:
        result = busy_room(local_plans, log, approver=approver, journal=journal)
    assert result.ok, result.error
    assert log == ["room_is_free:Oak", "book_room:Pine"]  # Oak is never booked
    assert result.replans == 1
    assert len(approver.requests) == 1  # the plan; the revision stayed inside what it approved
    (review,) = [e for e in journal.events() if e.kind == "checkpoint_reviewed"]
    assert review.data["needs_revision"] is True
    (replanned,) = [e for e in journal.events() if e.kind == "replanned"]
    assert replanned.data["within_envelope"] is True
    assert replanned.data["diff"]["removed"] == ["2"]
    (call,) = [e for e in journal.events() if e.kind == "llm_called"]
    assert call.data["purpose"] == "checkpoint"
    assert 'room_is_free({"room": "Oak"}) returned false' in call.data["messages"][1]["content"]


def stock(units: int, log: list[str]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read", trusted_output=True)
    def stock_level(item: str) -> int:
        """How many units of an item the warehouse has in stock."""
        log.append("stock_level")
        return units

    @reg.tool(effect="write")
    def place_order(item: str, quantity: int) -> str:
        """Order units of an item from the warehouse; needs that many in stock."""
        log.append("place_order")
        return "ordered"

    @reg.tool(effect="write")
    def add_backorder(item: str, quantity: int) -> str:
        """Put an item on the backorder list, to be ordered when stock arrives."""
        log.append("add_backorder")
        return "backordered"

    return reg


STOCK_PLAN = {
    "version": 1,
    "goal": "Order 5 widgets if at least 5 are in stock; otherwise put 5 widgets on the "
    "backorder list.",
    "steps": [
        {"id": "1", "tool": "stock_level", "args": {"item": "widget"}, "checkpoint": True},
        {"id": "2", "tool": "place_order", "args": {"item": "widget", "quantity": 5}},
    ],
}


def in_stock(llm: Any, log: list[str] | None = None, **kwargs: Any) -> RunResult:
    """``STOCK_PLAN`` with 12 widgets in stock: its checkpoint asks ``llm`` for a review."""
    return run_sync(
        Plan.parse(STOCK_PLAN),
        stock(12, [] if log is None else log),
        llm=llm,
        replanner=llm,
        **{"approver": planlock.approve_all(), **kwargs},
    )


def test_a_plan_that_still_fits_is_kept(local_plans: ReplayLLM) -> None:
    log: list[str] = []
    with capture_journal() as journal:
        result = in_stock(local_plans, log, journal=journal)
    assert result.ok, result.error
    assert log == ["stock_level", "place_order"]
    assert result.replans == 0
    (review,) = [e for e in journal.events() if e.kind == "checkpoint_reviewed"]
    assert review.data["needs_revision"] is False
