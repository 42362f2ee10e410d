"""Who sees which run: a submitter their own runs only, an approver the runs that asked a person
(what they may decide), an admin every run. Written as a second submitter, eve, would try: list,
show, stream and resume another's run, guess ids; and the event stream leaves out exactly what
the run view leaves out (who looked, who decided, from which address)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_server_support import TOKENS, auth, make_app, wait_for

from planlock import Journal, ToolRegistry, demo
from planlock.server import QueueEngine, ServerConfig, TokenStore, create_app
from planlock.server._views import AUDIT_KINDS

READ_ONLY = [{"id": "1", "tool": "fetch_account", "args": {"account_id": "{{user.account_id}}"}}]


@pytest.fixture
def client(tmp_path: Path, registry: ToolRegistry) -> Iterator[TestClient]:
    app, engine = make_app(tmp_path / "scope.db", registry)
    with TestClient(app) as c:
        yield c
    assert engine.journal.verify().ok


@pytest.fixture
def any_client(journal_spec: str | Path, registry: ToolRegistry) -> Iterator[TestClient]:
    """The same, on SQLite and (marked postgres) on PostgreSQL: the scope is SQL."""
    engine = QueueEngine(Journal.open(journal_spec), registry, poll=0.02)
    app = create_app(engine, TokenStore.from_tokens(TOKENS), ServerConfig(workers=0))
    with TestClient(app) as c:
        yield c
    assert engine.journal.verify().ok
    engine.close()


def submit(c: TestClient, who: str, plan: Any = None) -> dict[str, Any]:
    r = c.post(
        "/api/runs", json={"plan": plan or demo.PLAN, "inputs": demo.INPUTS}, headers=auth(who)
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def listed(c: TestClient, who: str) -> set[str]:
    r = c.get("/api/runs?limit=1000", headers=auth(who))
    assert r.status_code == 200
    return {run["run_id"] for run in r.json()}


def stream(c: TestClient, url: str, who: str, **headers: str) -> list[dict[str, Any]]:
    with c.stream("GET", url, headers={**auth(who), **headers}) as r:
        assert r.status_code == 200
        blocks = "".join(r.iter_text()).strip().split("\n\n")
    return [json.loads(b.split("data: ", 1)[1]) for b in blocks if "data: " in b]


def test_a_submitter_cannot_list_show_or_stream_another_submitters_run(
    client: TestClient,
) -> None:
    sams = submit(client, "sam")  # waits for a person
    sams_quiet = submit(client, "sam", READ_ONLY)  # runs without one
    eves = submit(client, "eve", READ_ONLY)
    assert listed(client, "eve") == {eves["run_id"]}
    assert listed(client, "sam") == {sams["run_id"], sams_quiet["run_id"]}
    for run in (sams, sams_quiet):
        rid = run["run_id"]
        unknown = client.get("/api/runs/01NOSUCHRUN000000000000000", headers=auth("eve"))
        for url, extra in [
            (f"/api/runs/{rid}", {}),
            (f"/api/runs/{rid}/events", {}),
            (f"/api/runs/{rid}/events?after=0", {}),
            (f"/api/runs/{rid}/events", {"Last-Event-ID": "1"}),
        ]:
            r = client.get(url, headers={**auth("eve"), **extra})
            assert r.status_code == 404, url
            # exactly what an unknown id gets: nothing tells eve the run exists
            assert r.json()["detail"] == f"no run {rid}"
            assert set(r.json()) == set(unknown.json())
        # sam still sees it
        assert client.get(f"/api/runs/{rid}", headers=auth("sam")).status_code == 200
    # eve cannot reach it through the approvals either: that is an approver's route
    assert (
        client.get(f"/api/approvals/{sams['approval_id']}", headers=auth("eve")).status_code == 403
    )
    # eve's attempts are journaled with her name, not under sam's run
    journal = client.app.state.engine.journal  # type: ignore[attr-defined]
    tried = [
        e.data
        for e in journal.events("http")
        if e.kind == "http_request" and e.data["caller"] == "eve" and e.data["status"] == 404
    ]
    assert len(tried) == 10  # 2 unknown ids, 8 of sam's
    assert not [
        e
        for e in journal.events(sams["run_id"])
        if e.kind == "http_request" and e.data["caller"] == "eve"
    ]


def test_an_approver_sees_the_runs_that_asked_a_person_and_an_admin_sees_every_run(
    any_client: TestClient,
) -> None:
    client = any_client
    asked = submit(client, "sam")
    quiet = submit(client, "sam", READ_ONLY)
    pats = submit(client, "pat", READ_ONLY)  # pat submits and approves
    assert listed(client, "alice") == {asked["run_id"]}
    assert client.get(f"/api/runs/{asked['run_id']}", headers=auth("alice")).status_code == 200
    assert client.get(f"/api/runs/{quiet['run_id']}", headers=auth("alice")).status_code == 404
    assert (
        client.get(f"/api/runs/{quiet['run_id']}/events", headers=auth("alice")).status_code == 404
    )
    # pat: their own runs, and what they may decide (sam's, which asked a person)
    assert listed(client, "pat") == {asked["run_id"], pats["run_id"]}
    # the self-approval rule does not hide a run: pat sees their own run that asks a person,
    # may deny it, and may not approve it
    own = submit(client, "pat")
    assert own["run_id"] in listed(client, "pat")
    body = {"plan_hash": own["plan_hash"], "reason": "not mine to approve"}
    url = f"/api/approvals/{own['approval_id']}"
    assert client.post(f"{url}/approve", json=body, headers=auth("pat")).status_code == 403
    assert client.post(f"{url}/deny", json=body, headers=auth("pat")).status_code == 200
    everyone = {asked["run_id"], quiet["run_id"], pats["run_id"], own["run_id"]}
    assert listed(client, "root") == everyone
    assert listed(client, "alice") == {asked["run_id"], own["run_id"]}
    assert listed(client, "eve") == set()


def test_the_event_stream_leaves_out_exactly_what_the_run_view_leaves_out(
    client: TestClient,
) -> None:
    sub = submit(client, "sam")
    rid = sub["run_id"]
    detail = client.get(f"/api/approvals/{sub['approval_id']}", headers=auth("alice")).json()
    body = {"plan_hash": detail["plan_hash"], "reason": "fine"}
    client.post(f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("alice"))
    wait_for(
        lambda: client.get(f"/api/runs/{rid}", headers=auth("sam")).json()["status"] == "succeeded"
    )
    view = client.get(f"/api/runs/{rid}", headers=auth("sam")).json()["events"]
    streamed = stream(client, f"/api/runs/{rid}/events", "sam")
    assert streamed == view
    # the journal does hold who viewed and decided this run, and from where: the filter bites
    journal = client.app.state.engine.journal  # type: ignore[attr-defined]
    audit = [e.data for e in journal.events(rid) if e.kind == "http_request"]
    assert {(a["caller"], a["client"]) for a in audit} >= {
        ("alice", "testclient"),
        ("sam", "testclient"),
    }
    assert not {e["kind"] for e in streamed} & AUDIT_KINDS
    assert not any(
        "testclient" in json.dumps(e) or "alice-token" in json.dumps(e) for e in streamed
    )
    # resuming from any point gives the same tail of the view, still without the audit events
    middle = view[len(view) // 2]["seq"]
    again = stream(client, f"/api/runs/{rid}/events", "sam", **{"Last-Event-ID": str(middle)})
    assert again == [e for e in view if e["seq"] > middle]
    # the approver who decided sees the same stream
    assert stream(client, f"/api/runs/{rid}/events", "alice") == view
