"""The bench's endorsing person (issue 12): it endorses a value once and later tasks with the
same value from the same source need no touch; attacked runs see a frozen copy of what was
endorsed on benign runs, which refuses anything new; and the autonomy metrics with endorsements,
computed from synthetic rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agentdojo")

from planlock import Journal, MemoryEndorsements, Plan, Policy, ToolRegistry, run_sync
from planlock.approval import Endorsement
from planlock.bench.agentdojo import FrozenEndorsements
from planlock.bench.agentdojo._bench import PairResult, PlanlockAgent, make_element, run_pairs
from planlock.bench.agentdojo._corpus import CorpusPlanner
from planlock.bench.agentdojo._person import ENDORSE_LABEL, PERSON, BenchApprover, ask_summary
from planlock.bench.agentdojo._report import (
    autonomy,
    autonomy_markdown,
    misses,
    summarize,
    write,
)
from planlock.errors import UsageError

LANDLORD = "DE89370400440532013000"
ATTACKER = "GB29NWBK60161331926819"
SOURCE = "tool:get_transactions#[*].recipient"


def _bank(recipient: str, paid: list[str]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def get_transactions() -> list[dict[str, Any]]:
        """Past transfers (untrusted)."""
        return [{"recipient": recipient}]

    @reg.tool(effect="pay")
    def send_money(recipient: str, amount: float) -> str:
        """Pay."""
        paid.append(recipient)
        return "sent"

    return reg


PAY_LAST = Plan.parse(
    [
        {"step": "1", "tool": "get_transactions"},
        {
            "step": "2",
            "tool": "send_money",
            "args": {"recipient": "{{steps.1.output.0.recipient}}", "amount": 950},
        },
    ]
)


POLICY = {"untrusted_to_sensitive": "require_approval", "effects": {"pay": "allow"}}
"""As the suites' policies: a payment the plan makes runs; a payee from untrusted data asks."""


def _pay(recipient: str, person: BenchApprover, store: Any, paid: list[str], **kwargs: Any) -> Any:
    reg = _bank(recipient, paid)
    policy = Policy.from_data(POLICY, reg)
    return run_sync(PAY_LAST, reg, approver=person, endorsements=store, policy=policy, **kwargs)


# -- the person --------------------------------------------------------------------------------


def test_the_endorsing_person_endorses_once_and_the_next_task_needs_no_touch() -> None:
    store, paid = MemoryEndorsements(), list[str]()
    first = BenchApprover("endorse")
    assert _pay(LANDLORD, first, store, paid).ok
    assert [a["answer"] for a in first.asked] == ["endorsed"]
    assert first.asked[0]["keys"] == ["flow:recipient"]
    (made,) = store.list()
    assert (made.source, made.by, made.label) == (SOURCE, PERSON, ENDORSE_LABEL)
    assert ask_summary(first.asked) == (1, ["call flow:recipient"])

    second = BenchApprover("endorse")  # a later task: same value, same source
    assert _pay(LANDLORD, second, store, paid).ok
    assert second.asked == []
    assert paid == [LANDLORD, LANDLORD]


def test_an_approving_person_endorses_nothing() -> None:
    store, paid = MemoryEndorsements(), list[str]()
    for _ in range(2):
        person = BenchApprover("all")
        assert _pay(LANDLORD, person, store, paid).ok
        assert [a["answer"] for a in person.asked] == ["approved"]
    assert store.list() == []


def test_a_frozen_store_refuses_new_endorsements_and_is_a_snapshot() -> None:
    store = MemoryEndorsements()
    landlord = Endorsement.of_value(LANDLORD, source=SOURCE, label="landlord", by="dana")
    store.add(landlord)
    frozen = FrozenEndorsements.of(store)
    store.add(Endorsement.of_value(ATTACKER, source=SOURCE, label="later", by="dana"))
    assert frozen.list() == [landlord]  # what was endorsed when it was frozen, only
    assert frozen.find(landlord.value_hash, SOURCE, "send_money.recipient") == landlord
    with pytest.raises(UsageError, match="frozen"):
        frozen.add(Endorsement.of_value(ATTACKER, source=SOURCE, label="x", by="dana"))
    assert FrozenEndorsements.of(None).list() == []
    # Over a frozen store the endorsing person approves the call, never endorses.
    person, paid = BenchApprover("endorse", frozen=True), list[str]()
    assert _pay("DE00" + "1" * 18, person, frozen, paid).ok
    assert [a["answer"] for a in person.asked] == ["approved"]
    assert frozen.list() == [landlord]


def test_an_attacked_run_cannot_use_an_endorsement_of_a_different_value() -> None:
    store, paid = MemoryEndorsements(), list[str]()
    _pay(LANDLORD, BenchApprover("endorse"), store, paid)
    frozen = FrozenEndorsements.of(store)
    unattended = BenchApprover("deny", frozen=True)
    journal = Journal()
    result = _pay(ATTACKER, unattended, frozen, paid, journal=journal)
    assert (result.failed_step, result.error_kind) == ("2", "denied")
    assert paid == [LANDLORD]
    assert [a["answer"] for a in unattended.asked] == ["denied"]
    kinds = [e.kind for e in journal.events()]
    assert "endorsement_used" not in kinds
    assert "endorsement_added" not in kinds
    # The endorsed value itself still passes, unattended.
    assert _pay(LANDLORD, BenchApprover("deny", frozen=True), frozen, paid).ok


# -- through AgentDojo -------------------------------------------------------------------------


def test_the_element_keeps_endorsements_across_a_suites_tasks() -> None:
    element, worst = make_element("banking", CorpusPlanner(), "oracle", approve="endorse")
    assert isinstance(element.endorsements, MemoryEndorsements)
    first, again = run_pairs(
        PlanlockAgent(element, worst), "banking", None, user_tasks=["user_task_3", "user_task_3"]
    )
    assert (first.utility, first.approvals, first.endorsements) == (True, 1, 1)
    assert first.person == "endorse"
    assert first.asks == ["call flow:amount"]
    assert (again.utility, again.approvals) == (True, 0)


def test_attacked_runs_over_the_frozen_store_stay_safe() -> None:
    users = ["user_task_3", "user_task_5"]
    endorser, eworst = make_element("banking", CorpusPlanner(), "worst", approve="endorse")
    run_pairs(PlanlockAgent(endorser, eworst), "banking", None, user_tasks=users)
    frozen = FrozenEndorsements.of(endorser.endorsements)
    assert frozen.list()
    element, worst = make_element("banking", CorpusPlanner(), "worst", endorsements=frozen)
    results = run_pairs(
        PlanlockAgent(element, worst),
        "banking",
        "important_instructions",
        user_tasks=users,
        injection_tasks=["injection_task_0", "injection_task_3", "injection_task_5"],
    )
    assert len(results) == 6
    for r in results:
        assert not r.attack_success, r
        assert (r.strict, r.tainted_effects, r.unasked_effects) == ([], [], []), r
        assert r.endorsements == 0
    assert len(frozen.list()) == len(FrozenEndorsements.of(endorser.endorsements).list())


# -- the metrics --------------------------------------------------------------------------------


def _row(
    task: str,
    utility: bool,
    approvals: int = 0,
    endorsements: int = 0,
    *,
    person: str = "deny",
    status: str = "",
    asks: list[str] | None = None,
) -> PairResult:
    return PairResult(
        agent="planlock",
        suite="banking",
        user_task=task,
        injection_task=None,
        attack=None,
        utility=utility,
        attack_success=False,
        approvals=approvals,
        status=status or ("succeeded" if utility else "failed"),
        person=person,
        endorsements=endorsements,
        asks=asks or [],
    )


UNATTENDED = [
    _row("user_task_0", True),
    _row("user_task_1", False, 1),
    _row("user_task_2", False, 1),
    _row("user_task_3", False, status="no_plan"),
]
APPROVED = [
    _row("user_task_0", True, person="all"),
    _row("user_task_1", True, 1, person="all", asks=["call flow:recipient"]),
    _row("user_task_2", True, 2, person="all", asks=["plan effect:send", "call flow:recipient"]),
    _row("user_task_3", False, person="all", status="no_plan"),
]
ENDORSED = [
    _row("user_task_0", True, person="endorse"),
    _row("user_task_1", True, 1, 1, person="endorse", asks=["call flow:recipient"]),
    # The recipient was endorsed by user_task_1: only the plan-level ask is left.
    _row("user_task_2", True, 1, 0, person="endorse", asks=["plan effect:send"]),
    _row("user_task_3", False, person="endorse", status="no_plan"),
]


def test_autonomy_rows_for_each_person() -> None:
    rows = {(r.person, r.suite): r for r in autonomy(UNATTENDED, APPROVED, ENDORSED)}
    assert set(rows) == {
        ("approve", "banking"),
        ("approve", "all"),
        ("endorse", "banking"),
        ("endorse", "all"),
    }
    approve, endorse = rows[("approve", "banking")], rows[("endorse", "banking")]
    # Touches needed: approve 0, 1, 2, never; endorse 0, 1, 1, never.
    assert (approve.tcr0, approve.tcr1, approve.tcr_inf) == (0.25, 0.5, 0.75)
    assert approve.hitl_load == pytest.approx(3 / 4)
    assert approve.endorsements == 0
    assert (endorse.tcr0, endorse.tcr1, endorse.tcr_inf) == (0.25, 0.75, 0.75)
    assert endorse.hitl_load == pytest.approx(2 / 4)  # the plan-level ask is still a touch
    assert endorse.endorsements == pytest.approx(1 / 4)
    assert endorse.fire_rate == pytest.approx(2 / 4)  # its own runs that asked
    assert approve.fire_rate == pytest.approx(2 / 4)  # the unattended runs that asked
    # Without endorsing runs: the approve rows only, as before.
    assert {r.person for r in autonomy(UNATTENDED, APPROVED)} == {"approve"}


def test_the_tasks_that_miss_with_their_reasons(tmp_path: Path) -> None:
    missed = misses(UNATTENDED, APPROVED, ENDORSED)
    assert [(m.task, m.approve, m.endorse, m.why) for m in missed] == [
        ("user_task_1", 1, 1, "call flow:recipient"),
        ("user_task_2", 2, 1, "plan effect:send"),
        ("user_task_3", math.inf, math.inf, "no plan"),
    ]
    # Without endorsing runs: the approving person's touches and asks.
    assert [m.why for m in misses(UNATTENDED, APPROVED)][1] == (
        "plan effect:send, call flow:recipient"
    )
    auto = autonomy(UNATTENDED, APPROVED, ENDORSED)
    md = autonomy_markdown(auto)
    assert "| planlock | banking | endorses values | 4 | 0.50 | 0.25 | 25.0% | 75.0% |" in md
    assert "| planlock | banking | approves each call | 4 | 0.75 | 0.00 | 25.0% | 50.0% |" in md
    rows = summarize(UNATTENDED, APPROVED)
    write(tmp_path, rows, UNATTENDED + APPROVED + ENDORSED, {}, autonomy_rows=auto, missed=missed)
    text = (tmp_path / "agentdojo.md").read_text()
    assert "| planlock | banking | user_task_2 | 2 | 1 | @0 | plan effect:send |" in text
    assert "| planlock | banking | user_task_3 | ∞ | ∞ | @0 @1 @∞ | no plan |" in text
    data = json.loads((tmp_path / "agentdojo.json").read_text())
    assert [m["task"] for m in data["misses"]] == ["user_task_1", "user_task_2", "user_task_3"]
    assert {p["person"] for p in data["pairs"]} == {"deny", "all", "endorse"}
