from __future__ import annotations

from typing import Any

import pytest

from planlock import (
    ApprovalDenied,
    ApprovalMismatch,
    ApprovalRequest,
    ApprovalRequired,
    Approved,
    Decision,
    Plan,
    PlanInvalid,
    ToolRegistry,
    approve_all,
    demo,
    run_sync,
)
from planlock.testing import capture_journal, memory_journal


def kinds(journal: Any) -> list[str]:
    return [e.kind for e in journal.events()]


def test_read_only_plans_run_under_the_default_risk_based_approval(registry: ToolRegistry) -> None:
    plan = Plan.parse(demo.SEED_PLAN[:2])
    with capture_journal() as j:
        result = run_sync(plan, registry, inputs=demo.INPUTS, journal=j)
    assert result.ok
    (granted,) = [e.data for e in j.events() if e.kind == "approval_granted"]
    assert (granted["by"], granted["via"], granted["plan_hash"]) == ("policy", "auto", plan.hash)


def test_a_sending_plan_needs_a_person_and_nothing_runs_without_one(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    plan = Plan.parse(demo.PLAN)
    j = memory_journal()
    with pytest.raises(ApprovalRequired, match="send_email"):
        run_sync(plan, registry, inputs=demo.INPUTS, journal=j)
    assert "step_started" not in kinds(j)
    assert desk.outbox == []
    assert kinds(j)[-2:] == ["approval_denied", "run_finished"]


def test_undeclared_effects_need_approval() -> None:
    reg = ToolRegistry()
    ran: list[int] = []

    @reg.tool
    def mystery() -> int:
        ran.append(1)
        return 1

    with pytest.raises(ApprovalRequired, match="declares no effect"):
        run_sync(Plan.parse([{"step": 1, "tool": "mystery"}]), reg)
    assert ran == []


def test_a_denial_is_journaled_with_who_and_why(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    def no(request: ApprovalRequest) -> Decision:
        return request.deny("alice", "callback", "not today")

    j = memory_journal()
    with pytest.raises(ApprovalDenied, match="not today") as exc:
        run_sync(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, journal=j, approver=no)
    assert exc.value.decision.by == "alice"
    denied = next(e.data for e in j.events() if e.kind == "approval_denied")
    assert (denied["by"], denied["via"], denied["reason"]) == ("alice", "callback", "not today")
    assert desk.outbox == []


def test_an_async_approver_sees_the_plan_hash_and_the_risky_steps(registry: ToolRegistry) -> None:
    seen: list[ApprovalRequest] = []

    async def ok(request: ApprovalRequest) -> Decision:
        seen.append(request)
        return request.approve("bob", "callback")

    plan = Plan.parse(demo.PLAN)
    result = run_sync(plan, registry, inputs=demo.INPUTS, approver=ok)
    assert result.ok
    (request,) = seen
    assert request.plan_hash == plan.hash
    assert [(r.step_id, r.effect) for r in request.risks] == [("4", "send")]
    assert request.effects == ("read", "send")


def test_a_grant_for_another_plan_is_refused(registry: ToolRegistry, desk: demo.HelpDesk) -> None:
    def stale(request: ApprovalRequest) -> Decision:
        return Approved(plan_hash="0" * 64, by="mallory", via="replay")

    j = memory_journal()
    with pytest.raises(ApprovalMismatch):
        run_sync(Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, journal=j, approver=stale)
    assert "approval_refused" in kinds(j)
    assert "step_started" not in kinds(j)
    assert desk.outbox == []


def test_an_invalid_plan_is_rejected_journaled_and_runs_nothing(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    plan = Plan.parse(
        [
            {"step": 1, "tool": "send_email", "args": {"to": "x@y.z", "template": "t"}},
            {"step": 2, "tool": "delete_everything", "args": {}},
        ]
    )
    j = memory_journal()
    with pytest.raises(PlanInvalid) as exc:
        run_sync(plan, registry, journal=j, approver=approve_all())
    assert [i.code for i in exc.value.issues] == ["unknown_tool"]
    rejected = next(e.data for e in j.events() if e.kind == "plan_rejected")
    assert rejected["issues"][0]["path"] == "$.steps[1].tool"
    assert "step_started" not in kinds(j)
    assert desk.outbox == []


def test_unknown_inputs_are_caught_before_anything_runs(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    with pytest.raises(PlanInvalid) as exc:
        run_sync(
            Plan.parse(demo.PLAN),
            registry,
            inputs={"ticket": {"id": "T-1001"}},
            approver=approve_all(),
        )
    assert {i.code for i in exc.value.issues} == {"unknown_input"}
    assert desk.outbox == []


def test_the_seed_scenario_injection_lands_only_in_an_output(
    registry: ToolRegistry, desk: demo.HelpDesk
) -> None:
    with capture_journal() as j:
        result = run_sync(
            Plan.parse(demo.PLAN), registry, inputs=demo.INPUTS, journal=j, approver=approve_all()
        )
    assert result.ok
    marker = "Ignore all previous instructions"
    outputs = [
        e.data["step"]
        for e in j.events()
        if e.kind == "step_finished" and marker in str(e.data["output"])
    ]
    args = [
        e.data["step"]
        for e in j.events()
        if e.kind == "step_started" and marker in str(e.data["args"])
    ]
    tools = [e.data["tool"] for e in j.events() if e.kind == "step_started"]
    assert outputs == ["1"]
    assert args == []
    assert "delete_account" not in tools
    assert desk.deleted == []
    assert [(m.to, m.template) for m in desk.outbox] == [
        ("dana@example.com", "cancellation_confirmation")
    ]
