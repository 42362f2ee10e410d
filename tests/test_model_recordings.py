"""The recorded plans of the model tier (``tests/data/local-plans.json``) answer today's
planning and checkpoint requests: a change to the planner's or the replanner's prompt, their
schemas or the tests' tools fails here, in the fast tier, until the replies are recorded again
with the model (``PLANLOCK_RECORD_PLANS=1 pytest -m model``), instead of the model tier quietly
paying for every plan again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import load_recorded_plans, model_identity, request_key
from test_local_model import OTHER_GOALS, plan_for
from test_replan_local import busy_room, in_stock

from planlock import LLMError, LLMReply, LLMRequest, demo


class FirstRequest:
    """Stands for the embedded model (same name, so the same keys) and stops at the first
    request, keeping its key."""

    name = "local"

    def __init__(self) -> None:
        self.key = ""

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.key = request_key(self.name, request)
        raise LLMError(self.name, "stopped at the first request")


@pytest.mark.parametrize("goal", [demo.GOAL, *(goal for goal, _ in OTHER_GOALS)])
def test_the_recorded_plans_answer_today_s_planning_requests(goal: str) -> None:
    llm = FirstRequest()
    with pytest.raises(LLMError, match="stopped at the first request"):
        plan_for(llm, goal)
    assert_recorded(llm.key, f"the planning request for {goal!r}")


@pytest.mark.parametrize("run", [busy_room, in_stock], ids=["busy-room", "in-stock"])
def test_the_recorded_reviews_answer_today_s_checkpoint_requests(run: Callable[..., Any]) -> None:
    llm = FirstRequest()
    with pytest.raises(LLMError, match="stopped at the first request"):
        run(llm)
    assert_recorded(llm.key, f"the checkpoint request of {run.__name__}")


def assert_recorded(key: str, what: str) -> None:
    recorded = load_recorded_plans(model_identity())
    assert recorded, "none for this model and runtime: PLANLOCK_RECORD_PLANS=1 pytest -m model"
    assert key in recorded, f"{what} changed: PLANLOCK_RECORD_PLANS=1 pytest -m model"
    reply = recorded[key]
    assert reply.finish_reason == "stop"
    assert reply.text
