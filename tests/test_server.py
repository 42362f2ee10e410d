"""planlock serve: submit, approve bound to the hash, run, stream, verify; roles on every route."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from test_server_support import TOKENS, auth, free_port, make_app, wait_for

from planlock import Journal, ToolRegistry, demo
from planlock.server._app import CSP, ServerConfig
from planlock.server._auth import ROLES
from planlock.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"/", "/static", "/api/openapi.json"}
"""Routes without a token: the page and its files (no data), and the schema."""


@pytest.fixture
def client(tmp_path: Path, registry: ToolRegistry) -> Iterator[TestClient]:
    app, engine = make_app(tmp_path / "serve.db", registry)
    with TestClient(app) as c:
        yield c
    assert engine.journal.verify().ok


def submit(client: TestClient, who: str = "sam", plan: Any = None) -> dict[str, Any]:
    body = {"plan": plan or demo.PLAN, "inputs": demo.INPUTS}
    r = client.post("/api/runs", json=body, headers=auth(who))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def journal_of(client: TestClient) -> Journal:
    journal: Journal = client.app.state.engine.journal  # type: ignore[attr-defined]
    return journal


def run_status(client: TestClient, run_id: str, who: str = "root") -> str:
    status: str = client.get(f"/api/runs/{run_id}", headers=auth(who)).json()["status"]
    return status


# -- authentication on every route --------------------------------------------------------------


def api_routes(app: Any) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")]


def test_every_route_refuses_a_missing_or_wrong_token_and_a_wrong_role(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    # no limit on failed authentications here: this test fails twice on every route
    app, engine = make_app(tmp_path / "r.db", registry, ServerConfig(workers=0, auth_failures=0))
    with TestClient(app) as client:
        anonymous = _refuse_on_every_route(client)
    journal = engine.journal
    refused = [
        e
        for e in journal.events("http")
        if e.kind == "http_request" and e.data["status"] in (401, 403)
    ]
    assert {e.data["caller"] for e in refused} == {"nobody", "sam", "alice"}
    # the requests without a known token: counted, not journaled one by one
    tallies = [e.data for e in journal.events("http") if e.kind == "http_anonymous"]
    assert sum(t["requests"] for t in tallies) == anonymous
    assert sum(t["statuses"].get("401", 0) for t in tallies) == anonymous
    assert journal.verify().ok


def _refuse_on_every_route(client: TestClient) -> int:
    """Call every route without a token, with wrong ones and with every role; how many calls
    had no known token."""
    app: Any = client.app
    anonymous = 0
    routes = api_routes(app)
    assert len(routes) >= 10
    others = {getattr(r, "path", "") for r in app.routes} - {r.path for r in routes}
    assert others <= PUBLIC, f"routes outside /api must be public on purpose: {others - PUBLIC}"
    for route in routes:
        allowed = set(route.openapi_extra["x-roles"]) if route.openapi_extra else set()
        assert "admin" in allowed, route.path
        path = re.sub(r"\{[^}]+\}", "01NOSUCHTHING", route.path)
        for method in route.methods or ():
            where = f"{method} {route.path}"

            def call(headers: dict[str, str], m: str = method, p: str = path) -> Any:
                return client.request(m, p, headers=headers, json={})

            r = call({})
            assert r.status_code == 401, where
            assert r.headers["www-authenticate"] == "Bearer"
            assert call({"Authorization": "Bearer not-a-token"}).status_code == 401, where
            assert call({"Authorization": f"Basic {TOKEN_SAMPLE}"}).status_code == 401, where
            anonymous += 3
            assert call(auth("nobody")).status_code == 403, where
            for role in set(ROLES) - allowed:
                name = {"submitter": "sam", "approver": "alice"}[role]
                assert call(auth(name)).status_code == 403, f"{where} as {role}"
            for role in allowed:
                name = {"submitter": "sam", "approver": "alice", "admin": "root"}[role]
                assert call(auth(name)).status_code not in (401, 403), f"{where} as {role}"
    return anonymous


TOKEN_SAMPLE = next(iter(TOKENS))


def test_submit_approve_run_and_every_request_is_journaled_with_its_caller(
    client: TestClient, desk: demo.HelpDesk
) -> None:
    sub = submit(client)
    assert sub["status"] == "pending_approval"
    (pending,) = client.get("/api/approvals", headers=auth("alice")).json()
    assert (pending["id"], pending["submitted_by"]) == (sub["approval_id"], "sam")
    assert any("send_email" in w for w in pending["why"])
    detail = client.get(f"/api/approvals/{sub['approval_id']}", headers=auth("alice")).json()
    assert detail["plan_hash"] == sub["plan_hash"]
    assert [n["id"] for n in detail["graph"]["nodes"]][-1] == "4"
    edges = {(e["source"], e["target"]) for e in detail["graph"]["edges"]}
    assert edges == {("2", "4"), ("3", "4")}  # step 4 uses the outputs of steps 2 and 3
    assert detail["report"]["effects"][-1] == "send"
    assert desk.outbox == []

    body = {"plan_hash": detail["plan_hash"], "reason": "checked the recipient"}
    r = client.post(
        f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("alice")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["by"], r.json()["approved"]) == ("alice", True)
    wait_for(lambda: run_status(client, sub["run_id"]) == "succeeded")
    assert [m.to for m in desk.outbox] == ["dana@example.com"]
    (listed,) = client.get("/api/runs", headers=auth("sam")).json()
    assert (listed["state"], listed["lease_expires_at"]) == ("done", None)  # released at the end
    assert listed["claimed_by"].endswith(":http-0")

    events = journal_of(client).events(sub["run_id"])
    granted = [e for e in events if e.kind == "approval_granted"]
    assert [(e.data["by"], e.data["via"], e.data["reason"]) for e in granted] == [
        ("alice", "http", "checked the recipient")
    ]
    http = [
        (e.data["method"], e.data["caller"], e.data["status"])
        for e in events
        if e.kind == "http_request"
    ]
    assert ("POST", "sam", 201) in http
    assert ("POST", "alice", 200) in http
    assert ("GET", "alice", 200) in http
    again = client.post(
        f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("alice")
    )
    assert again.status_code == 409  # single use: already answered
    verify = client.get("/api/journal/verify", headers=auth("root")).json()
    assert verify["ok"] is True
    assert verify["events"] == len(journal_of(client).events()) - 1  # this request comes after


def test_two_apps_in_one_process_each_serve_their_own_engine_and_config(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    """The API routes are made once per process and shared by every app: a handler must act on
    the engine and config of the app serving the request, never on another app's."""
    first, first_engine = make_app(tmp_path / "a.db", registry, ServerConfig(workers=0))
    second, second_engine = make_app(
        tmp_path / "b.db", registry, ServerConfig(workers=0, allow_self_approval=True)
    )
    assert api_routes(first) == api_routes(second)  # the same route objects
    with TestClient(first) as a, TestClient(second) as b:
        in_a, in_b = submit(a, "root"), submit(b, "root")
        assert [r["run_id"] for r in a.get("/api/runs", headers=auth("root")).json()] == [
            in_a["run_id"]
        ]
        assert b.get(f"/api/runs/{in_a['run_id']}", headers=auth("root")).status_code == 404
        decision = {"plan_hash": in_b["plan_hash"], "reason": "mine"}
        # self-approval: allowed by the second app's config only
        url = "/api/approvals/{}/approve"
        assert b.post(
            url.format(in_b["approval_id"]), json=decision, headers=auth("root")
        ).is_success
        decision["plan_hash"] = in_a["plan_hash"]
        mine = a.post(url.format(in_a["approval_id"]), json=decision, headers=auth("root"))
        assert mine.status_code == 403
    runs_a, runs_b = set(first_engine.journal.runs()), set(second_engine.journal.runs())
    assert in_a["run_id"] in runs_a - runs_b
    assert in_b["run_id"] in runs_b - runs_a


def test_workers_that_fail_stop_the_server_and_say_why(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    app, engine = make_app(tmp_path / "w.db", registry, ServerConfig(workers=2))

    async def broken(workers: int) -> None:
        raise RuntimeError(f"{workers} workers cannot start")

    engine.work = broken  # type: ignore[method-assign]
    stopped: list[bool] = []
    app.state.stop = lambda: stopped.append(True)  # what `planlock serve` sets: uvicorn's exit
    with TestClient(app) as client:
        wait_for(lambda: bool(stopped), timeout=5)
        assert client.get("/api/me", headers=auth("root")).status_code == 200  # until it stops
    assert stopped == [True]
    assert str(app.state.worker_failure) == "2 workers cannot start"


def test_an_approval_naming_another_hash_is_refused(
    client: TestClient, desk: demo.HelpDesk
) -> None:
    sub = submit(client)
    url = f"/api/approvals/{sub['approval_id']}/approve"
    wrong = {"plan_hash": "0" * 64, "reason": "looks fine"}
    r = client.post(url, json=wrong, headers=auth("alice"))
    assert r.status_code == 409
    assert "reload" in r.json()["detail"]
    r = client.post(
        url,
        json={**wrong, "plan_hash": sub["plan_hash"], "args_hash": "1" * 64},
        headers=auth("alice"),
    )
    assert r.status_code == 409  # a plan request has no arguments hash
    assert run_status(client, sub["run_id"]) == "pending_approval"
    kinds = [e.kind for e in journal_of(client).events(sub["run_id"])]
    assert "approval_granted" not in kinds
    assert desk.outbox == []


def test_an_approver_cannot_approve_their_own_submission(client: TestClient) -> None:
    sub = submit(client, "pat")
    body = {"plan_hash": sub["plan_hash"], "reason": "mine"}
    r = client.post(f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("pat"))
    assert r.status_code == 403
    assert "submitted this run" in r.json()["detail"]
    # denying one's own submission is allowed: it can only make things safer
    deny = client.post(f"/api/approvals/{sub['approval_id']}/deny", json=body, headers=auth("pat"))
    assert deny.status_code == 200


def test_self_approval_when_the_server_allows_it(tmp_path: Path, registry: ToolRegistry) -> None:
    app, _ = make_app(
        tmp_path / "s.db", registry, ServerConfig(allow_self_approval=True, workers=0)
    )
    with TestClient(app) as c:
        sub = submit(c, "pat")
        body = {"plan_hash": sub["plan_hash"]}
        r = c.post(f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("pat"))
        assert r.status_code == 200
        assert run_status(c, sub["run_id"]) == "approved"  # no worker in this server


def test_a_denial_needs_a_reason_and_finishes_the_run(
    client: TestClient, desk: demo.HelpDesk
) -> None:
    sub = submit(client)
    url = f"/api/approvals/{sub['approval_id']}/deny"
    r = client.post(url, json={"plan_hash": sub["plan_hash"]}, headers=auth("alice"))
    assert r.status_code == 422
    assert r.json()["issues"][0]["path"] == "$.reason"
    r = client.post(
        url, json={"plan_hash": sub["plan_hash"], "reason": "wrong customer"}, headers=auth("alice")
    )
    assert r.status_code == 200
    assert run_status(client, sub["run_id"]) == "denied"
    last = journal_of(client).events(sub["run_id"])
    assert [e.data for e in last if e.kind == "run_finished"] == [{"status": "denied"}]
    assert desk.outbox == []


def test_an_invalid_plan_is_refused_with_every_issue(client: TestClient) -> None:
    plan = {"version": 1, "goal": "x", "steps": [{"id": "1", "tool": "no_such_tool", "args": {}}]}
    r = client.post("/api/runs", json={"plan": plan}, headers=auth("sam"))
    assert r.status_code == 422
    assert r.json()["issues"][0]["code"] == "unknown_tool"
    assert client.get("/api/runs", headers=auth("sam")).json() == []


def test_a_read_only_plan_runs_without_a_person(client: TestClient) -> None:
    plan = {"version": 1, "goal": "read", "steps": [demo.PLAN["steps"][1]]}
    sub = submit(client, plan=plan)
    assert (sub["status"], sub["approval_id"]) == ("approved", None)
    wait_for(lambda: run_status(client, sub["run_id"]) == "succeeded")


def test_a_run_streams_its_events_until_it_finishes(client: TestClient) -> None:
    sub = submit(client)
    body = {"plan_hash": sub["plan_hash"], "reason": "ok"}
    client.post(f"/api/approvals/{sub['approval_id']}/approve", json=body, headers=auth("alice"))
    url = f"/api/runs/{sub['run_id']}/events"
    with client.stream("GET", url, headers=auth("sam")) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        blocks = "".join(r.iter_text()).strip().split("\n\n")
    events = [json.loads(b.split("data: ", 1)[1]) for b in blocks if "data: " in b]
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert events[-1]["data"]["status"] == "succeeded"
    assert kinds.count("step_finished") == 4
    # resuming after an event id sends only what followed
    after = events[-3]["seq"]
    with client.stream("GET", f"{url}?after={after}", headers=auth("sam")) as r:
        rest = [b for b in "".join(r.iter_text()).strip().split("\n\n") if "data: " in b]
    assert [json.loads(b.split("data: ", 1)[1])["seq"] for b in rest] == [
        e["seq"] for e in events if e["seq"] > after
    ]


def test_unknown_runs_and_approvals_are_404(client: TestClient) -> None:
    assert client.get("/api/runs/nope", headers=auth("sam")).status_code == 404
    assert client.get("/api/runs/nope/events", headers=auth("sam")).status_code == 404
    assert client.get("/api/approvals/nope", headers=auth("alice")).status_code == 404


def test_a_goal_is_planned_by_the_configured_model(tmp_path: Path, registry: ToolRegistry) -> None:
    llm = ScriptedLLM([demo.PLAN])
    app, _ = make_app(tmp_path / "g.db", registry, ServerConfig(planner=llm, workers=0))
    with TestClient(app) as c:
        body = {"goal": demo.GOAL, "context": demo.INPUTS}
        r = c.post("/api/goals", json=body, headers=auth("sam"))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending_approval"
        assert r.json()["plan"]["steps"][3]["tool"] == "send_email"
        assert demo.GOAL in llm.prompts[1]
        assert "dana@example.com" not in " ".join(llm.prompts)  # shapes, not values (R1)


def test_without_a_model_goals_are_refused(client: TestClient) -> None:
    r = client.post("/api/goals", json={"goal": "do it"}, headers=auth("sam"))
    assert r.status_code == 503
    assert "--model" in r.json()["detail"]


def test_the_page_is_served_without_external_scripts(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "'self'" in page.headers["content-security-policy"]
    assert "http" not in re.sub(r'href="/|src="/', "", page.text).split("<body>")[0].replace(
        "http-equiv", ""
    )
    script = client.get("/static/app.js").text
    assert "sessionStorage" in script
    assert "innerHTML" not in script  # values are inserted as text


@pytest.mark.integration
@pytest.mark.slow  # a shell session that starts `planlock serve` and workers
def test_the_server_docs_example_runs(tmp_path: Path) -> None:
    """The bash block of docs/server.md, on a free port, with this interpreter's planlock."""
    text = (ROOT / "docs" / "server.md").read_text()
    (script,) = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    script = script.replace("8765", str(free_port()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PLANLOCK_JOURNAL", None)
    done = subprocess.run(
        ["/bin/bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"approved":true' in done.stdout.replace(" ", "")
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "event: run_finished", lines
    assert "journal intact" in done.stdout
    events = Journal.open(tmp_path / "serve.db").events()
    granted = [e.data for e in events if e.kind == "approval_granted"]
    assert [(g["by"], g["reason"]) for g in granted] == [
        ("alice", "right customer, standard template")
    ]


def test_a_call_approval_is_bound_to_the_arguments_hash(
    client: TestClient, desk: demo.HelpDesk
) -> None:
    plan = {
        "version": 1,
        "goal": "reply to the ticket's sender",
        "steps": [
            {"id": "1", "tool": "read_ticket", "args": {"ticket_id": "{{ticket.id}}"}},
            {
                "id": "2",
                "tool": "send_email",
                "args": {"to": "{{steps.1.output.customer_id}}", "template": "ack"},
            },
        ],
    }
    sub = submit(client, plan=plan)
    ok = {"plan_hash": sub["plan_hash"], "reason": "plan is fine"}
    r = client.post(f"/api/approvals/{sub['approval_id']}/approve", json=ok, headers=auth("alice"))
    assert r.status_code == 200

    def call_request() -> list[dict[str, Any]]:
        pending = client.get("/api/approvals", headers=auth("alice")).json()
        return [p for p in pending if p["kind"] == "call"]

    wait_for(lambda: bool(call_request()))
    (call,) = call_request()
    detail = client.get(f"/api/approvals/{call['id']}", headers=auth("alice")).json()
    assert (detail["step_id"], detail["args"]["to"]) == ("2", "A-1001")
    assert detail["provenance"]["to"] == ["step:1"]
    url = f"/api/approvals/{call['id']}/approve"
    stale = {"plan_hash": sub["plan_hash"], "args_hash": "f" * 64, "reason": "saw other args"}
    assert client.post(url, json=stale, headers=auth("alice")).status_code == 409
    missing = {"plan_hash": sub["plan_hash"], "reason": "no args hash"}
    assert client.post(url, json=missing, headers=auth("alice")).status_code == 409
    assert desk.outbox == []
    right = {**stale, "args_hash": detail["args_hash"], "reason": "the sender is the customer"}
    assert client.post(url, json=right, headers=auth("alice")).status_code == 200
    wait_for(lambda: run_status(client, sub["run_id"]) == "succeeded")
    assert [m.to for m in desk.outbox] == ["A-1001"]


# -- a bad request or a failure is answered, journaled, and the server keeps going ------------


def test_a_non_numeric_last_event_id_is_422_and_the_server_keeps_answering(
    client: TestClient,
) -> None:
    sub = submit(client)
    url = f"/api/runs/{sub['run_id']}/events"
    for bad in ("abc", "-1", "1.5"):
        r = client.get(url, headers={**auth("sam"), "Last-Event-ID": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["issues"][0]["path"] == "$.last-event-id"
    assert client.get("/api/me", headers=auth("sam")).status_code == 200
    refused = [e.data for e in journal_of(client).events("http") if e.kind == "http_request"]
    assert [d["status"] for d in refused if d["path"] == url] == [422, 422, 422]
    assert journal_of(client).verify().ok


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
def test_a_non_finite_number_in_inputs_is_422_and_the_server_keeps_answering(
    client: TestClient, number: str
) -> None:
    plan = json.dumps(demo.PLAN)
    bad_plan = json.dumps(demo.PLAN).replace('"args": {', f'"args": {{"n": {number}, ', 1)
    assert number in bad_plan
    for url, body, where in [
        ("/api/runs", f'{{"plan": {plan}, "inputs": {{"x": {{"n": [1, {number}]}}}}}}', "inputs"),
        ("/api/runs", f'{{"plan": {bad_plan}}}', "plan"),
        ("/api/goals", f'{{"goal": "g", "context": {{"n": {number}}}}}', "context"),
    ]:
        headers = {**auth("sam"), "Content-Type": "application/json"}
        r = client.post(url, content=body, headers=headers)
        assert r.status_code == 422, r.text
        (issue,) = r.json()["issues"]
        assert issue["path"] == f"$.{where}"
        assert "not a JSON number" in issue["message"]
    assert not [e for e in journal_of(client).events("http") if e.kind == "request_failed"]
    submit(client)  # still serving
    assert journal_of(client).verify().ok


def test_an_unexpected_error_is_a_journaled_generic_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: Any = client.app.state.engine  # type: ignore[attr-defined]

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret detail: dana@example.com")

    monkeypatch.setattr(engine, "run", broken)
    r = client.get("/api/runs/01SOMERUN", headers=auth("sam"))
    assert r.status_code == 500
    assert set(r.json()) == {"detail"}
    assert "secret" not in r.text
    assert "RuntimeError" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    monkeypatch.undo()
    assert client.get("/api/me", headers=auth("sam")).status_code == 200
    journal = journal_of(client)
    (failed,) = [e for e in journal.events("01SOMERUN") if e.kind == "request_failed"]
    assert failed.data == {
        "method": "GET",
        "route": "/api/runs/{run_id}",
        "status": 500,
        "error": "RuntimeError",
        "caller": "sam",
    }
    http = [e.data for e in journal.events("01SOMERUN") if e.kind == "http_request"]
    assert [(d["path"], d["status"]) for d in http] == [("/api/runs/01SOMERUN", 500)]
    assert journal.verify().ok


# -- security headers ------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    sub = submit(client)
    responses = {
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
        "me": client.get("/api/me", headers=auth("sam")),
        "run": client.get(f"/api/runs/{sub['run_id']}", headers=auth("sam")),
        "approval": client.get(f"/api/approvals/{sub['approval_id']}", headers=auth("alice")),
        "refused": client.get("/api/runs", headers={}),
        "missing": client.get("/api/nothing-here"),
    }
    for name, r in responses.items():
        assert r.headers["x-frame-options"] == "DENY", name
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], name
        if name not in ("page", "script"):
            assert r.headers["cache-control"] == "no-store", name
    assert responses["run"].json()["inputs"] == demo.INPUTS
    csp = [d.strip() for d in responses["page"].headers["content-security-policy"].split(";")]
    assert csp == [*(d.strip() for d in CSP.split(";")), "frame-ancestors 'none'"]
