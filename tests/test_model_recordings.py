"""The recorded plans of the model tier (``tests/data/local-plans.json``) answer today's
planning requests: a change to the planner's prompt, its schema or the demo's tools fails here,
in the fast tier, until the plans are recorded again with the model
(``PLANLOCK_RECORD_PLANS=1 pytest -m model``), instead of the model tier quietly paying for
every plan again."""

from __future__ import annotations

import pytest
from conftest import load_recorded_plans, model_identity, request_key
from test_local_model import OTHER_GOALS, plan_for

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
    recorded = load_recorded_plans(model_identity())
    assert recorded, "none for this model and runtime: PLANLOCK_RECORD_PLANS=1 pytest -m model"
    llm = FirstRequest()
    with pytest.raises(LLMError, match="stopped at the first request"):
        plan_for(llm, goal)
    assert llm.key in recorded, (
        f"the planning request for {goal!r} changed: PLANLOCK_RECORD_PLANS=1 pytest -m model"
    )
    reply = recorded[llm.key]
    assert reply.finish_reason == "stop"
    assert reply.text
