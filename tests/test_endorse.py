"""Endorsement (issue 12): a person approves a value once; the same value from the same source
then reaches a sensitive parameter without asking. Bound to the value's hash, its source and
(optionally) the target; expired, revoked, look-alike or other-source values ask again."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import planlock
from planlock import (
    ApprovalRequest,
    Decision,
    Endorsement,
    Journal,
    MemoryEndorsements,
    Plan,
    SQLEndorsements,
    ToolRegistry,
    run_sync,
)
from planlock.approval import value_hash, value_source
from planlock.errors import UsageError
from planlock.testing import ScriptedLLM
from planlock.validation import analyse

LANDLORD = "DE89370400440532013000"
LOOK_ALIKE = "DE89370400440532013OOO"  # letter O for zero: another value, another hash
ATTACKER = "GB29NWBK60161331926819"


@dataclass
class Bank:
    transactions: list[dict[str, Any]] = field(
        default_factory=lambda: [{"recipient": LANDLORD, "subject": "rent"}]
    )
    bill: str = LANDLORD
    paid: list[str] = field(default_factory=list)

    def registry(self) -> ToolRegistry:
        reg = ToolRegistry()

        @reg.tool(effect="read")
        def get_transactions() -> list[dict[str, Any]]:
            """Past transfers: their sender writes every field (untrusted)."""
            return self.transactions

        @reg.tool(effect="read")
        def read_bill(name: str) -> str:
            """A bill's text (untrusted)."""
            return self.bill

        @reg.tool(effect="read", trusted_output=True)
        def payees() -> list[str]:
            """The user's saved payees (trusted)."""
            return [LANDLORD, ATTACKER]

        @reg.tool(effect="pay")
        def send_money(recipient: str, amount: float) -> str:
            """Pay."""
            self.paid.append(recipient)
            return "sent"

        @reg.tool(effect="pay")
        def schedule_transfer(recipient: str, amount: float) -> str:
            """Pay later."""
            self.paid.append(recipient)
            return "scheduled"

        return reg


FROM_HISTORY = Plan.parse(
    [
        {"step": "1", "tool": "get_transactions"},
        {
            "step": "2",
            "tool": "send_money",
            "args": {"recipient": "{{steps.1.output.0.recipient}}", "amount": 950},
        },
    ]
)
FROM_BILL = Plan.parse(
    [
        {"step": "1", "tool": "read_bill", "args": {"name": "rent"}},
        {
            "step": "2",
            "tool": "send_money",
            "args": {"recipient": "{{steps.1.output}}", "amount": 950},
        },
    ]
)
SCHEDULED_FROM_HISTORY = Plan.parse(
    [
        {"step": "a", "tool": "get_transactions"},
        {
            "step": "b",
            "tool": "schedule_transfer",
            "args": {"recipient": "{{steps.a.output.0.recipient}}", "amount": 950},
        },
    ]
)
HISTORY_SOURCE = "tool:get_transactions#[*].recipient"


@dataclass
class Person:
    """Approves plans; at a call, endorses (``label``), approves or denies, and counts."""

    label: str | None = "landlord"
    deny_calls: bool = False
    any_target: bool = False
    calls: list[ApprovalRequest] = field(default_factory=list)

    def __call__(self, request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("dana", "test")
        self.calls.append(request)
        if self.deny_calls:
            return request.deny("dana", "test", "not my landlord")
        if self.label:
            return request.endorse("dana", "test", self.label, any_target=self.any_target)
        return request.approve("dana", "test")


def pay(
    plan: Plan, bank: Bank, person: Person, store: Any, journal: Journal | None = None
) -> planlock.RunResult:
    return run_sync(
        plan, bank.registry(), approver=person, endorsements=store, journal=journal or Journal()
    )


# -- the source of a value ---------------------------------------------------------------------


def test_sources_name_tools_and_paths_never_step_ids() -> None:
    reg = Bank().registry()
    a = analyse(FROM_HISTORY, reg)
    b = analyse(SCHEDULED_FROM_HISTORY, reg)
    assert value_source(a.steps, a.steps["2"], "recipient") == HISTORY_SOURCE
    assert value_source(b.steps, b.steps["b"], "recipient") == HISTORY_SOURCE
    assert value_source(a.steps, a.steps["2"], "amount") == "plan"
    bill = analyse(FROM_BILL, reg)
    assert value_source(bill.steps, bill.steps["2"], "recipient") == "tool:read_bill"


def test_sources_of_llm_outputs_choices_loops_and_interpolations() -> None:
    plan = Plan.parse(
        [
            {"step": "1", "tool": "read_bill", "args": {"name": "rent"}},
            {
                "step": "2",
                "tool": "llm",
                "args": {
                    "instruction": "Extract the IBAN.",
                    "input": "{{steps.1.output}}",
                    "output_schema": {
                        "type": "object",
                        "properties": {"iban": {"type": "string"}},
                        "required": ["iban"],
                    },
                },
            },
            {"step": "3", "tool": "payees"},
            {
                "step": "4",
                "tool": "llm",
                "args": {
                    "instruction": "Which payee does the bill name?",
                    "input": "{{steps.1.output}}",
                    "choices": "{{steps.3.output}}",
                },
            },
            {"step": "5", "tool": "get_transactions"},
            {
                "step": "6",
                "tool": "send_money",
                "for_each": "{{steps.5.output}}",
                "max_items": 10,
                "args": {"recipient": "{{item.recipient}}", "amount": 1},
            },
            {
                "step": "7",
                "tool": "send_money",
                "args": {
                    "recipient": "IBAN {{steps.2.output.iban}} / {{steps.4.output}}",
                    "amount": 1,
                },
            },
            {
                "step": "8",
                "tool": "send_money",
                "args": {"recipient": "{{steps.2.output.iban}}", "amount": 1},
            },
            {
                "step": "9",
                "tool": "send_money",
                "args": {"recipient": "{{steps.4.output}}", "amount": 1},
            },
        ]
    )
    a = analyse(plan, Bank().registry())
    assert not a.issues, a.issues
    assert value_source(a.steps, a.steps["8"], "recipient") == "llm#iban(tool:read_bill)"
    assert value_source(a.steps, a.steps["9"], "recipient") == "chosen:tool:payees"
    assert value_source(a.steps, a.steps["6"], "recipient") == HISTORY_SOURCE
    assert (
        value_source(a.steps, a.steps["7"], "recipient")
        == "chosen:tool:payees+llm#iban(tool:read_bill)"
    )


def test_an_endorsement_checks_its_fields() -> None:
    with pytest.raises(UsageError, match="label"):
        Endorsement(value_hash(LANDLORD), HISTORY_SOURCE, " ", "dana")
    with pytest.raises(UsageError, match="SHA-256"):
        Endorsement("abc", HISTORY_SOURCE, "landlord", "dana")
    with pytest.raises(UsageError, match=r"TOOL\.PARAM"):
        Endorsement(value_hash(LANDLORD), HISTORY_SOURCE, "landlord", "dana", target="send")
    with pytest.raises(UsageError, match="ISO 8601"):
        Endorsement(value_hash(LANDLORD), HISTORY_SOURCE, "landlord", "dana", expires_at="soon")
    e = Endorsement.of_value(LANDLORD, source=HISTORY_SOURCE, label="landlord", by="dana")
    assert Endorsement.from_json(e.to_json()) == e


# -- binding ---------------------------------------------------------------------------------


def test_the_same_value_from_the_same_source_passes_without_asking() -> None:
    bank, store, person, journal = Bank(), MemoryEndorsements(), Person(), Journal()
    assert pay(FROM_HISTORY, bank, person, store, journal).ok
    assert len(person.calls) == 1
    (offer,) = person.calls[0].endorsable
    assert (offer.param, offer.source, offer.target) == (
        "recipient",
        HISTORY_SOURCE,
        "send_money.recipient",
    )
    assert offer.value_hash == value_hash(LANDLORD)
    (e,) = store.list()
    assert (e.label, e.by, e.via, e.target) == ("landlord", "dana", "test", "send_money.recipient")

    assert pay(FROM_HISTORY, bank, person, store, journal).ok
    assert len(person.calls) == 1  # not asked again
    assert bank.paid == [LANDLORD, LANDLORD]
    kinds = [ev.kind for ev in journal.events()]
    assert kinds.count("endorsement_added") == 1
    (used,) = [ev.data for ev in journal.events() if ev.kind == "endorsement_used"]
    assert (used["endorsement"], used["param"], used["label"], used["by"]) == (
        e.id,
        "recipient",
        "landlord",
        "dana",
    )
    assert journal.verify().ok


def test_an_endorsement_also_settles_the_flow_within_the_same_run() -> None:
    plan = Plan.parse(
        [
            {"step": "1", "tool": "get_transactions"},
            {
                "step": "2",
                "tool": "send_money",
                "for_each": "{{steps.1.output}}",
                "max_items": 10,
                "args": {"recipient": "{{item.recipient}}", "amount": 5},
            },
        ]
    )
    bank = Bank(transactions=[{"recipient": LANDLORD}] * 3)
    person = Person()
    assert run_sync(plan, bank.registry(), approver=person).ok  # no store: this run only
    assert len(person.calls) == 1
    assert bank.paid == [LANDLORD] * 3


def test_a_different_value_asks_again() -> None:
    bank, store = Bank(), MemoryEndorsements()
    pay(FROM_HISTORY, bank, Person(), store)
    bank.transactions = [{"recipient": ATTACKER}]
    person = Person(deny_calls=True)
    result = pay(FROM_HISTORY, bank, person, store)
    assert (result.failed_step, result.error_kind) == ("2", "denied")
    assert [r.args for r in person.calls] == [{"recipient": ATTACKER, "amount": 950}]
    assert bank.paid == [LANDLORD]


def test_the_same_value_from_another_source_asks_again() -> None:
    bank, store = Bank(), MemoryEndorsements()
    pay(FROM_HISTORY, bank, Person(), store)
    person = Person(deny_calls=True)
    result = pay(FROM_BILL, bank, person, store)  # the bill names the same IBAN
    assert result.error_kind == "denied"
    assert person.calls[0].endorsable[0].source == "tool:read_bill"
    assert bank.paid == [LANDLORD]


def test_an_endorsement_is_bound_to_its_target_unless_any() -> None:
    bank, store = Bank(), MemoryEndorsements()
    pay(FROM_HISTORY, bank, Person(), store)
    person = Person(deny_calls=True)
    assert pay(SCHEDULED_FROM_HISTORY, bank, person, store).error_kind == "denied"
    assert len(person.calls) == 1

    anywhere = MemoryEndorsements()
    pay(FROM_HISTORY, bank, Person(any_target=True), anywhere)
    assert anywhere.list()[0].target is None
    person = Person(deny_calls=True)
    assert pay(SCHEDULED_FROM_HISTORY, bank, person, anywhere).ok
    assert person.calls == []


def test_an_expired_endorsement_asks_again() -> None:
    bank = Bank()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    store = MemoryEndorsements(
        [
            Endorsement.of_value(
                LANDLORD,
                source=HISTORY_SOURCE,
                label="landlord",
                by="dana",
                expires_at=past,
            )
        ]
    )
    person = Person(deny_calls=True)
    assert pay(FROM_HISTORY, bank, person, store).error_kind == "denied"
    assert len(person.calls) == 1


def test_a_revoked_endorsement_asks_again_and_revocation_is_journaled() -> None:
    bank, store, journal = Bank(), MemoryEndorsements(), Journal()
    e = planlock.endorse(
        store, LANDLORD, source=HISTORY_SOURCE, label="landlord", by="dana", journal=journal
    )
    person = Person(deny_calls=True)
    assert pay(FROM_HISTORY, bank, person, store, journal).ok
    assert person.calls == []
    revoked = planlock.revoke_endorsement(store, e.id, by="sam", journal=journal)
    assert (revoked.revoked_by, revoked.live()) == ("sam", False)
    with pytest.raises(UsageError, match="revoked already"):
        planlock.revoke_endorsement(store, e.id, by="sam")
    assert pay(FROM_HISTORY, bank, person, store, journal).error_kind == "denied"
    assert len(person.calls) == 1
    kinds = [ev.kind for ev in journal.events()]
    assert kinds[0] == "endorsement_added"
    assert "endorsement_revoked" in kinds
    assert journal.verify().ok


def test_a_deny_rule_is_not_overridden_by_an_endorsement() -> None:
    policy = planlock.Policy(untrusted_to_sensitive="deny")
    store = MemoryEndorsements(
        [Endorsement.of_value(LANDLORD, source=HISTORY_SOURCE, label="landlord", by="dana")]
    )
    with pytest.raises(planlock.ApprovalDenied):
        run_sync(
            FROM_HISTORY, Bank().registry(), approver=Person(), endorsements=store, policy=policy
        )


def test_a_chosen_value_can_be_endorsed() -> None:
    plan = Plan.parse(
        [
            {"step": "1", "tool": "read_bill", "args": {"name": "rent"}},
            {"step": "2", "tool": "payees"},
            {
                "step": "3",
                "tool": "llm",
                "args": {
                    "instruction": "Which payee does the bill name?",
                    "input": "{{steps.1.output}}",
                    "choices": "{{steps.2.output}}",
                },
            },
            {
                "step": "4",
                "tool": "send_money",
                "args": {"recipient": "{{steps.3.output}}", "amount": 1},
            },
        ]
    )
    bank, store = Bank(), MemoryEndorsements()
    llm = ScriptedLLM(lambda _: {"result": LANDLORD})
    person = Person()
    for _ in range(2):
        assert run_sync(plan, bank.registry(), llm=llm, approver=person, endorsements=store).ok
    assert len(person.calls) == 1
    assert person.calls[0].reasons[0].key == "choice:recipient"
    assert store.list()[0].source == "chosen:tool:payees"
    # The injection picks the other allowed payee: not endorsed, a person is asked.
    steered = ScriptedLLM(lambda _: {"result": ATTACKER})
    no = Person(deny_calls=True)
    result = run_sync(plan, bank.registry(), llm=steered, approver=no, endorsements=store)
    assert result.error_kind == "denied"
    assert len(no.calls) == 1


def test_only_the_params_offered_can_be_endorsed() -> None:
    bank, store = Bank(), MemoryEndorsements()

    def picky(request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("dana", "test")
        with pytest.raises(UsageError, match="endorse one of"):
            request.endorse("dana", "test", {"amount": "rent"})
        return request.endorse("dana", "test", {"recipient": "landlord"})

    assert run_sync(FROM_HISTORY, bank.registry(), approver=picky, endorsements=store).ok
    assert [e.label for e in store.list()] == ["landlord"]


def test_a_grant_cannot_smuggle_an_endorsement_for_another_value() -> None:
    bank, store = Bank(), MemoryEndorsements()
    forged = Endorsement.of_value(ATTACKER, source=HISTORY_SOURCE, label="landlord", by="eve")

    def sneaky(request: ApprovalRequest) -> Decision:
        if request.kind == "plan":
            return request.approve("eve", "test")
        return replace(request.approve("eve", "test"), endorsements=(forged,))

    assert run_sync(FROM_HISTORY, bank.registry(), approver=sneaky, endorsements=store).ok
    assert store.list() == []


# -- the attacker ------------------------------------------------------------------------------


def test_an_attacker_cannot_reuse_an_endorsement_with_a_look_alike_or_from_elsewhere() -> None:
    """The attacker writes the transaction history and the bill (every field), and knows the
    landlord is endorsed. A look-alike IBAN has another hash; the real IBAN planted in a
    place the person never endorsed it from (the bill) has another source. Both ask."""
    bank, store = Bank(), MemoryEndorsements()
    pay(FROM_HISTORY, bank, Person(), store)  # dana endorses the landlord from her history
    bank.transactions = [{"recipient": LOOK_ALIKE, "subject": "rent (new account)"}]
    bank.bill = LANDLORD
    person = Person(deny_calls=True)
    assert pay(FROM_HISTORY, bank, person, store).error_kind == "denied"
    assert pay(FROM_BILL, bank, person, store).ok is False
    assert [(r.args or {}).get("recipient") for r in person.calls] == [LOOK_ALIKE, LANDLORD]
    assert [r.endorsable[0].source for r in person.calls] == [HISTORY_SOURCE, "tool:read_bill"]
    assert bank.paid == [LANDLORD]
    # Matching is by hash and source (and target), never by a label or a look-alike.
    assert store.find(value_hash(LOOK_ALIKE), HISTORY_SOURCE, "send_money.recipient") is None


# -- kept across runs ------------------------------------------------------------------------


def test_sql_endorsements_persist_across_runs_and_processes(journal_spec: str | Path) -> None:
    db = journal_spec  # an SQLite file, or a fresh PostgreSQL schema (the postgres tier)
    journal = Journal.open(db)
    bank = Bank()
    person = Person()
    assert pay(FROM_HISTORY, bank, person, SQLEndorsements.beside(journal), journal).ok
    assert len(person.calls) == 1

    again = Journal.open(db)  # another process, the next month
    store = SQLEndorsements.open(db)
    (saved,) = store.list()
    assert (saved.label, saved.source, saved.value_hash) == (
        "landlord",
        HISTORY_SOURCE,
        value_hash(LANDLORD),
    )
    quiet = Person(deny_calls=True)
    assert pay(FROM_HISTORY, bank, quiet, store, again).ok
    assert quiet.calls == []
    store.revoke(saved.id, "dana")
    assert store.list() == []
    assert store.list(include_revoked=True)[0].revoked_by == "dana"
    assert pay(FROM_HISTORY, bank, quiet, store, again).error_kind == "denied"
    with pytest.raises(UsageError, match="no endorsement"):
        store.revoke("01NOSUCH", "dana")
    assert again.verify().ok
    kinds = [ev.kind for ev in again.events()]
    assert {"endorsement_added", "endorsement_used"} <= set(kinds)
