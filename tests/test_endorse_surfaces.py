"""Endorsement through every surface: the terminal prompt, ``planlock endorse``, the queue
(``approve --endorse``), and ``serve``'s route and page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from test_endorse import FROM_HISTORY, HISTORY_SOURCE, LANDLORD, Bank
from test_server_support import auth, make_app, wait_for
from typer.testing import CliRunner

from planlock import EndorseAs, Journal, Plan, SQLEndorsements, UsageError
from planlock.approval import value_hash
from planlock.cli import app
from planlock.queue import ApprovalQueue

ROOT = Path(__file__).resolve().parents[1]
BANKING = f"{ROOT / 'examples' / 'banking.py'}:registry"
runner = CliRunner()

UNTRUSTED_PAYEE = [
    {"step": 1, "tool": "read_bill", "args": {"name": "electricity"}},
    {"step": 2, "tool": "send_money", "args": {"recipient": "{{steps.1.output}}", "amount": 84.2}},
]


def kinds(db: Path) -> list[str]:
    return [e.kind for e in Journal.open(db).events()]


# -- the terminal -------------------------------------------------------------------------------


def test_the_terminal_offers_to_endorse_and_the_next_run_does_not_ask(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(UNTRUSTED_PAYEE))
    db = tmp_path / "j.db"
    run = ["run", str(plan), "--tools", BANKING, "--journal", str(db), "--approve", "prompt"]
    first = runner.invoke(app, run, input="y\ne\nelectricity company\n")
    assert first.exit_code == 0, first.output
    assert "[e]ndorse this value" in first.output
    assert "you may endorse these values" in first.output
    (saved,) = SQLEndorsements.open(db).list()
    assert (saved.label, saved.source, saved.via) == (
        "electricity company",
        "tool:read_bill",
        "terminal",
    )
    second = runner.invoke(app, run, input="y\n")  # the plan only: the call is endorsed
    assert second.exit_code == 0, second.output
    assert "Approval requested for a call" not in second.output
    assert "endorsed by" in second.output  # the progress line
    assert kinds(db).count("endorsement_used") == 1
    assert Journal.open(db).verify().ok


@pytest.mark.parametrize(("answers", "code"), [("y\nn\n", 3), ("y\ne\n\n", 0), ("y\ny\n", 0)])
def test_the_terminal_prompt_still_approves_or_denies_once(
    tmp_path: Path, answers: str, code: int
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(UNTRUSTED_PAYEE))
    db = tmp_path / "j.db"
    result = runner.invoke(
        app,
        ["run", str(plan), "--tools", BANKING, "--journal", str(db), "--approve", "prompt"],
        input=answers,
    )
    assert result.exit_code == code, result.output
    assert SQLEndorsements.open(db).list() == []  # no label given: nothing endorsed


# -- planlock endorse -----------------------------------------------------------------------


def test_endorse_add_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    added = runner.invoke(
        app,
        [
            "endorse", "add", LANDLORD, "--source", HISTORY_SOURCE, "--label", "landlord",
            "--as", "dana", "--target", "send_money.recipient", "--journal", db, "--json",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    made = json.loads(added.stdout)
    assert made["value_hash"] == value_hash(LANDLORD)
    assert (made["by"], made["via"], made["target"]) == ("dana", "cli", "send_money.recipient")
    listed = runner.invoke(app, ["endorse", "list", "--journal", db, "--json"])
    assert [e["id"] for e in json.loads(listed.stdout)] == [made["id"]]
    table = runner.invoke(app, ["endorse", "list", "--journal", db])
    assert "landlord" in table.output
    assert "live" in table.output
    revoked = runner.invoke(app, ["endorse", "revoke", made["id"], "--as", "sam", "--journal", db])
    assert revoked.exit_code == 0, revoked.output
    assert (
        json.loads(runner.invoke(app, ["endorse", "list", "--journal", db, "--json"]).stdout) == []
    )
    again = runner.invoke(app, ["endorse", "revoke", made["id"], "--as", "sam", "--journal", db])
    assert again.exit_code == 2
    assert "revoked already" in again.output
    every = runner.invoke(app, ["endorse", "list", "--all", "--journal", db, "--json"])
    assert json.loads(every.stdout)[0]["revoked_by"] == "sam"
    assert kinds(Path(db)) == ["endorsement_added", "endorsement_revoked"]
    assert Journal.open(db).verify().ok


@pytest.mark.parametrize(
    "args",
    [
        ["endorse", "add", "x", "--source", "tool:t", "--label", "l"],  # no --as
        ["endorse", "add", "x", "--source", "tool:t", "--label", " ", "--as", "d"],
        ["endorse", "add", "x", "--source", "tool:t", "--label", "l", "--as", "d", "--target", "t"],
        ["endorse", "add", "{", "--source", "tool:t", "--label", "l", "--as", "d", "--json-value"],
        ["endorse", "add", "x", "--source", "tool:t", "--label", "l", "--as", "d",
         "--expires-in", "soon"],
        ["endorse", "revoke", "01NOSUCH", "--as", "d"],
    ],
)  # fmt: skip
def test_endorse_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--journal", str(tmp_path / "j.db")])
    assert result.exit_code == 2, result.output


def test_a_json_value_hashes_as_its_json(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    added = runner.invoke(
        app,
        ["endorse", "add", "950", "--json-value", "--source", "tool:t#amount", "--label", "rent",
         "--as", "d", "--expires-in", "30d", "--journal", db, "--json"],
    )  # fmt: skip
    made = json.loads(added.stdout)
    assert made["value_hash"] == value_hash(950) != value_hash("950")
    assert made["expires_at"] > made["at"]


# -- the queue ------------------------------------------------------------------------------


def submit(queue: ApprovalQueue, bank: Bank) -> Any:
    async def go() -> Any:
        return await queue.submit(FROM_HISTORY, bank.registry())

    return anyio.run(go)


def work_in_thread(db: Path, bank: Bank) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        worker = ApprovalQueue(Journal.open(db))

        async def one() -> Any:
            return await worker.work_one(bank.registry(), "w1", poll=0.02)

        out.append(anyio.run(one))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


def test_a_queue_decision_can_endorse_and_the_next_run_does_not_ask(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    bank = Bank()
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, bank)
    with pytest.raises(UsageError, match="only a call request"):
        queue.decide(sub.approval_id, approve=True, by="alice", endorse=EndorseAs("landlord"))
    queue.decide(sub.approval_id, approve=True, by="alice")
    thread, out = work_in_thread(db, bank)
    wait_for(lambda: any(p["kind"] == "call" for p in queue.pending()))
    (call,) = [p for p in queue.pending() if p["kind"] == "call"]
    (offer,) = call["request"]["endorsable"]
    assert (offer["param"], offer["source"]) == ("recipient", HISTORY_SOURCE)
    with pytest.raises(UsageError, match="only an approval"):
        queue.decide(call["id"], approve=False, by="alice", reason="x", endorse=EndorseAs("x"))
    with pytest.raises(UsageError, match="endorse one of"):
        queue.decide(
            call["id"], approve=True, by="alice", endorse=EndorseAs("x", params=("amount",))
        )
    assert queue.get(call["id"])["status"] == "pending"  # the refusal changed nothing
    decision = queue.decide(call["id"], approve=True, by="alice", endorse=EndorseAs("landlord"))
    assert [e.label for e in decision.endorsements] == ["landlord"]  # type: ignore[union-attr]
    thread.join(20)
    assert out[0].status == "succeeded"

    second = submit(queue, bank)
    queue.decide(second.approval_id, approve=True, by="alice")
    thread, out = work_in_thread(db, bank)
    thread.join(20)
    assert not thread.is_alive(), "the worker waited for a person"
    assert out[0].status == "succeeded"
    assert bank.paid == [LANDLORD, LANDLORD]
    events = Journal.open(db).events()
    added = [e for e in events if e.kind == "endorsement_added"]
    assert [(e.run_id, e.data["via"], e.data["step"]) for e in added] == [(sub.run_id, "cli", "2")]
    assert [e.run_id for e in events if e.kind == "endorsement_used"] == [second.run_id]
    assert Journal.open(db).verify().ok


def test_an_endorsement_is_journaled_in_the_transaction_that_stores_it(tmp_path: Path) -> None:
    """A decider killed right after its COMMIT (before it tells listeners) must not leave an
    endorsement the journal lacks: it was journaled after the commit (issue 13)."""
    db = tmp_path / "q.db"
    bank = Bank()
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, bank)
    queue.decide(sub.approval_id, approve=True, by="alice")
    thread, _ = work_in_thread(db, bank)
    wait_for(lambda: any(p["kind"] == "call" for p in queue.pending()))
    (call,) = [p for p in queue.pending() if p["kind"] == "call"]

    class Killed(BaseException):
        pass

    def killed(event: Any) -> None:
        raise Killed  # the process dies here: after the COMMIT, before anything else

    queue.journal.recorded = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        queue.decide(call["id"], approve=True, by="alice", endorse=EndorseAs("landlord"))
    thread.join(20)
    events = Journal.open(db).events(sub.run_id)
    (added,) = [e.data for e in events if e.kind == "endorsement_added"]
    (stored,) = SQLEndorsements.open(db).list()
    assert (added["id"], added["label"], added["by"]) == (stored.id, "landlord", "alice")
    kinds = [e.kind for e in events]
    assert kinds.index("approval_granted") < kinds.index("endorsement_added")
    assert Journal.open(db).verify().ok


PAY_EACH = Plan.parse(
    [
        {"step": "1", "tool": "get_transactions"},
        {
            "step": "2",
            "tool": "send_money",
            "for_each": "{{steps.1.output}}",
            "max_items": 5,
            "args": {"recipient": "{{item.recipient}}", "amount": 5},
        },
    ]
)


def test_a_loop_is_approved_once_through_the_queue_and_its_values_endorsed(
    tmp_path: Path,
) -> None:
    """A ``for_each`` step's calls that need a person are one stored request (every call shown,
    bound to all of them): one answer runs the loop, and endorses each value it offered."""
    db = tmp_path / "q.db"
    bank = Bank(transactions=[{"recipient": LANDLORD}, {"recipient": "DE02120300000000202051"}])
    queue = ApprovalQueue(Journal.open(db))

    async def go() -> Any:
        return await queue.submit(PAY_EACH, bank.registry())

    sub = anyio.run(go)
    queue.decide(sub.approval_id, approve=True, by="alice")
    thread, out = work_in_thread(db, bank)
    wait_for(lambda: any(p["kind"] == "call" for p in queue.pending()))
    (call,) = [p for p in queue.pending() if p["kind"] == "call"]
    shown = call["request"]["args"]["calls"]
    assert [c["args"]["recipient"] for c in shown] == [LANDLORD, "DE02120300000000202051"]
    assert bank.paid == []  # nothing runs before the answer
    decision = queue.decide(call["id"], approve=True, by="alice", endorse=EndorseAs("payee"))
    assert len(decision.endorsements) == 2  # type: ignore[union-attr]
    thread.join(20)
    assert out[0].status == "succeeded"
    assert bank.paid == [LANDLORD, "DE02120300000000202051"]
    assert len(SQLEndorsements.open(db).list()) == 2
    assert Journal.open(db).verify().ok


def test_planlock_approve_endorse_through_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    bank = Bank()
    queue = ApprovalQueue(Journal.open(db))
    sub = submit(queue, bank)
    plan_only = runner.invoke(
        app, ["approve", sub.approval_id, "--as", "alice", "--endorse", "x", "--journal", str(db)]
    )
    assert plan_only.exit_code == 2
    assert "only a call request" in plan_only.output
    loose = runner.invoke(
        app, ["approve", sub.approval_id, "--as", "alice", "--any-target", "--journal", str(db)]
    )
    assert loose.exit_code == 2
    queue.decide(sub.approval_id, approve=True, by="alice")
    thread, out = work_in_thread(db, bank)
    wait_for(lambda: any(p["kind"] == "call" for p in queue.pending()))
    (call,) = [p for p in queue.pending() if p["kind"] == "call"]
    done = runner.invoke(
        app,
        ["approve", call["id"], "--as", "alice", "--endorse", "landlord", "--any-target",
         "--journal", str(db)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "endorsed" in done.output
    assert "any sensitive" in done.output
    thread.join(20)
    assert out[0].status == "succeeded"
    (saved,) = SQLEndorsements.open(db).list()
    assert (saved.target, saved.by) == (None, "alice")


# -- serve -----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Bank]]:
    bank = Bank()
    api, engine = make_app(tmp_path / "serve.db", bank.registry())
    with TestClient(api) as client:
        yield client, bank
    assert engine.journal.verify().ok


def call_request(client: TestClient) -> list[dict[str, Any]]:
    pending = client.get("/api/approvals", headers=auth("alice")).json()
    return [p for p in pending if p["kind"] == "call"]


def submit_and_approve(client: TestClient) -> dict[str, Any]:
    body = {"plan": FROM_HISTORY.canonical(), "inputs": {}}
    sub: dict[str, Any] = client.post("/api/runs", json=body, headers=auth("sam")).json()
    ok = {"plan_hash": sub["plan_hash"]}
    url = f"/api/approvals/{sub['approval_id']}/approve"
    assert client.post(url, json=ok, headers=auth("alice")).status_code == 200
    return sub


def run_status(client: TestClient, run_id: str) -> str:
    status: str = client.get(f"/api/runs/{run_id}", headers=auth("sam")).json()["status"]
    return status


def test_serve_endorses_from_a_call_request_bound_to_its_hashes(
    served: tuple[TestClient, Bank],
) -> None:
    client, bank = served
    sub = submit_and_approve(client)
    wait_for(lambda: bool(call_request(client)))
    (call,) = call_request(client)
    detail = client.get(f"/api/approvals/{call['id']}", headers=auth("alice")).json()
    (offer,) = detail["endorsable"]
    assert (offer["param"], offer["source"], offer["target"]) == (
        "recipient",
        HISTORY_SOURCE,
        "send_money.recipient",
    )
    url = f"/api/approvals/{call['id']}/endorse"
    body = {"plan_hash": sub["plan_hash"], "args_hash": detail["args_hash"], "label": "landlord"}
    assert client.post(url, json=body, headers=auth("sam")).status_code == 403  # a submitter
    stale = {**body, "args_hash": "f" * 64}
    assert client.post(url, json=stale, headers=auth("alice")).status_code == 409
    assert client.post(url, json={**body, "label": ""}, headers=auth("alice")).status_code == 422
    wrong = {**body, "params": ["amount"]}
    assert client.post(url, json=wrong, headers=auth("alice")).status_code == 409
    r = client.post(url, json=body, headers=auth("alice"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["approved"], out["by"]) == (True, "alice")
    (made,) = out["endorsements"]
    assert (made["label"], made["via"], made["value_hash"]) == (
        "landlord",
        "http",
        value_hash(LANDLORD),
    )
    wait_for(lambda: run_status(client, sub["run_id"]) == "succeeded")

    second = submit_and_approve(client)
    wait_for(lambda: run_status(client, second["run_id"]) == "succeeded")
    assert call_request(client) == []
    assert bank.paid == [LANDLORD, LANDLORD]

    listed = client.get("/api/endorsements", headers=auth("alice")).json()
    assert [e["id"] for e in listed] == [made["id"]]
    assert client.get("/api/endorsements", headers=auth("sam")).status_code == 403
    revoke = f"/api/endorsements/{made['id']}/revoke"
    assert client.post(revoke, headers=auth("sam")).status_code == 403
    revoked = client.post(revoke, headers=auth("alice"))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_by"] == "alice"
    assert client.post(revoke, headers=auth("alice")).status_code == 409
    assert (
        client.post("/api/endorsements/01NOSUCH/revoke", headers=auth("alice")).status_code == 404
    )
    assert client.get("/api/endorsements", headers=auth("alice")).json() == []

    third = submit_and_approve(client)
    wait_for(lambda: bool(call_request(client)))  # revoked: a person is asked again
    events = client.app.state.engine.journal.events()  # type: ignore[attr-defined]
    assert [e.run_id for e in events if e.kind == "endorsement_used"] == [second["run_id"]]
    assert "endorsement_revoked" in [e.kind for e in events]
    assert third["run_id"]


def test_the_page_offers_endorse_and_inserts_values_as_text(
    served: tuple[TestClient, Bank],
) -> None:
    client, _ = served
    script = client.get("/static/app.js").text
    assert "Approve and endorse" in script
    assert "endorsable" in script
    assert "innerHTML" not in script


LOOP_TOOLS = '''
from planlock import ToolRegistry

registry = ToolRegistry()


@registry.tool(effect="read")
def past_payees() -> list[str]:
    """Who sent the user money (each sender wrote their own IBAN: untrusted)."""
    return ["DE89370400440532013000", "DE02120300000000202051"]


@registry.tool(effect="pay", sensitive=["recipient"])
def send_money(recipient: str, amount: float) -> str:
    """Pay."""
    return "paid " + recipient
'''


def test_the_terminal_shows_a_loop_s_calls_and_endorses_each_value(tmp_path: Path) -> None:
    """A loop's one request, at the terminal: every call's arguments on its own row (``item i:
    param``) with where it came from, and the endorse prompt names each value offered."""
    tools = tmp_path / "loop_tools.py"
    tools.write_text(LOOP_TOOLS, encoding="utf-8")
    plan = tmp_path / "plan.json"
    steps = [
        {"step": 1, "tool": "past_payees"},
        {
            "step": 2,
            "tool": "send_money",
            "for_each": "{{steps.1.output}}",
            "max_items": 5,
            "args": {"recipient": "{{item}}", "amount": 1},
        },
    ]
    plan.write_text(json.dumps(steps))
    db = tmp_path / "j.db"
    run = ["run", str(plan), "--tools", f"{tools}:registry", "--journal", str(db)]
    result = runner.invoke(app, [*run, "--approve", "prompt"], input="y\ne\npayee\n")
    assert result.exit_code == 0, result.output
    assert "item 0: recipient" in result.output
    assert "item 1: recipient" in result.output
    assert "step:1" in result.output  # where each value came from
    assert 'recipient = "DE89370400440532013000", "DE02120300000000202051"' in result.output
    saved = SQLEndorsements.open(db).list()
    assert sorted(e.label for e in saved) == ["payee", "payee"]
    asks = [e for e in Journal.open(db).events() if e.kind == "approval_requested"]
    assert [a.data["kind"] for a in asks] == ["plan", "call"]  # one request for both calls
