"""Secure by default at the sinks (issue 12): every parameter of a side-effecting tool is
sensitive, numbers and ids included, unless the tool declares it ``free``."""

from __future__ import annotations

from typing import Any

import pytest

import planlock
from planlock import Plan, ToolRegistry, assess


def registry(**options: Any) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def read_bill() -> dict[str, Any]:
        """A bill written by a third party (untrusted)."""
        return {"iban": "DE02 1203 0000 0000 2020 51", "amount": 10.0, "id": 7}

    @reg.tool(effect="pay", **options)
    def pay(iban: str, amount: float, id: int, subject: str = "") -> str:  # noqa: A002
        """Pay."""
        return "paid"

    @reg.tool(effect="read")
    def search(query: str, limit: int = 5) -> list[str]:
        """Search (a read tool: nothing sensitive unless declared)."""
        return []

    return reg


@pytest.mark.parametrize("effect", ["write", "delete", "send", "pay", None])
def test_every_parameter_of_a_sink_is_sensitive(effect: str | None) -> None:
    reg = ToolRegistry()

    def act(target: str, count: int, record_id: int, note: str = "") -> str:
        return "ok"

    tool = reg.tool(effect=effect)(act) if effect else reg.tool(act)
    assert tool is act
    assert reg["act"].sensitive == frozenset({"target", "count", "record_id", "note"})


def test_free_parameters_are_left_out_and_reads_stay_as_declared() -> None:
    reg = registry(free=["subject"])
    assert reg["pay"].sensitive == frozenset({"iban", "amount", "id"})
    assert reg["search"].sensitive == frozenset()
    assert reg["pay"].describe()["sensitive"] == ["amount", "iban", "id"]


def untrusted_plan(field: str) -> Plan:
    args = {"iban": "DE89 3704 0044 0532 0130 00", "amount": 5.0, "id": 1}
    args[field] = "{{steps.1.output.%s}}" % field  # noqa: UP031  (a placeholder, not formatting)
    return Plan.parse(
        [{"step": "1", "tool": "read_bill"}, {"step": "2", "tool": "pay", "args": args}]
    )


@pytest.mark.parametrize("field", ["iban", "amount", "id"])
def test_untrusted_numbers_and_ids_reach_a_person_like_payees_do(field: str) -> None:
    reg = registry()
    report = assess(untrusted_plan(field), reg)
    assert [(f.step_id, f.param, f.action) for f in report.flows] == [
        ("2", field, "require_approval")
    ]
    assert [a.step_id for a in report.call_approvals] == ["2"]


def test_an_untrusted_amount_does_not_run_unattended() -> None:
    reg = registry()
    asked: list[str] = []

    def approver(request: planlock.ApprovalRequest) -> planlock.Decision:
        asked.append(request.kind)
        if request.kind == "call":
            return request.deny("alice", "test", "not this amount")
        return request.approve("alice", "test")

    result = planlock.run_sync(untrusted_plan("amount"), reg, approver=approver)
    assert not result.ok
    assert asked == ["plan", "call"]
    assert result.statuses["2"] != "finished"


def test_a_free_parameter_takes_untrusted_data_without_asking() -> None:
    reg = registry(free=["amount"])
    report = assess(untrusted_plan("amount"), reg)
    assert report.flows == ()
    assert report.call_approvals == ()
