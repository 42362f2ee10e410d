"""The approval page end to end in headless Chromium (Debian ``chromium``, driven by Playwright).

Skipped when Chromium is absent, unless ``PLANLOCK_REQUIRE_BROWSER`` is set (CI sets it).
``scripts/screenshot.py`` runs the same scenario to write ``docs/approval-page.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_support import TOKEN_OF, auth, serve

from planlock import Journal, demo

CHROMIUM = Path(os.environ.get("PLANLOCK_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REASON = "Recipient is the ticket's own customer; template is the standard one."


def chromium_or_skip() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("PLANLOCK_REQUIRE_BROWSER"):
            pytest.fail(f"PLANLOCK_REQUIRE_BROWSER is set but there is no {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def submit(base: str, goal: str) -> dict[str, Any]:
    plan = {**demo.PLAN, "goal": goal}
    r = httpx.post(
        f"{base}/api/runs", json={"plan": plan, "inputs": demo.INPUTS}, headers=auth("sam")
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def every_node_in_view(page: Any) -> None:
    """Every step of the graph lies inside the graph box's visible area (within its border and
    scrollbars), with nothing to scroll to: none is cut off, as the send step was."""
    view = page.locator("#graph-box").evaluate(
        """b => { const r = b.getBoundingClientRect();
                  return { x: r.x + b.clientLeft, y: r.y + b.clientTop, width: b.clientWidth,
                           height: b.clientHeight, scroll: b.scrollWidth - b.clientWidth }; }"""
    )
    nodes = page.get_by_test_id("graph").locator("[data-node]")
    assert nodes.count() >= 4
    for i in range(nodes.count()):
        node = nodes.nth(i).bounding_box()
        assert node is not None
        where = (nodes.nth(i).get_attribute("data-node"), node, view)
        assert view["x"] <= node["x"] + 0.5, where
        assert node["x"] + node["width"] <= view["x"] + view["width"] + 0.5, where
        assert view["y"] <= node["y"] + 0.5, where
        assert node["y"] + node["height"] <= view["y"] + view["height"] + 0.5, where
    assert view["scroll"] <= 0, view


def approve_in_the_page(base: str, screenshot: Path | None = None) -> dict[str, Any]:
    """Submit three plans, approve the first one in the page, watch it finish live."""
    from playwright.sync_api import expect, sync_playwright

    first = submit(base, demo.GOAL)
    submit(base, "Refund order 4412 and tell the customer")
    submit(base, "Send the renewal reminder to Dana")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.get_by_test_id("token").fill(TOKEN_OF["alice"])
            page.get_by_test_id("sign-in").click()
            expect(page.get_by_test_id("whoami")).to_have_text("alice (approver)")
            items = page.get_by_test_id("pending-item")
            expect(items).to_have_count(3)
            page.locator(f'[data-testid="pending-item"][data-id="{first["approval_id"]}"]').click()
            expect(page.get_by_test_id("goal")).to_have_text(demo.GOAL)
            graph = page.get_by_test_id("graph")
            expect(graph.locator("[data-node]")).to_have_count(4)
            expect(graph.locator("[data-edge]")).to_have_count(2)
            every_node_in_view(page)
            page.set_viewport_size({"width": 1024, "height": 900})  # a narrower graph box
            every_node_in_view(page)
            page.set_viewport_size({"width": 1440, "height": 900})
            expect(page.get_by_test_id("steps").locator("tbody tr")).to_have_count(4)
            expect(page.get_by_test_id("plan-hash")).to_have_text(first["plan_hash"][:16])
            expect(page.get_by_test_id("why")).to_contain_text("send_email")
            page.get_by_test_id("reason").fill(REASON)
            page.get_by_test_id("approve").click()
            expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=30_000)
            events = page.get_by_test_id("events")
            expect(events.locator('[data-kind="step_finished"]')).to_have_count(4)
            expect(events).to_contain_text("approved by alice")
            expect(graph.locator('[data-node="4"]')).to_contain_text("finished")
            expect(items).to_have_count(2)
            if screenshot is not None:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot), full_page=True)
            # the token lives in sessionStorage: a reload keeps the session
            page.reload()
            expect(page.get_by_test_id("whoami")).to_have_text("alice (approver)")
            expect(items).to_have_count(2)
            assert errors == []
        finally:
            browser.close()
    return first


@pytest.mark.integration
@pytest.mark.browser
def test_approve_in_the_page_and_watch_the_run_finish(tmp_path: Path) -> None:
    chromium_or_skip()
    with serve(tmp_path) as server:
        first = approve_in_the_page(server.url)
    journal = Journal.open(server.db)
    assert journal.verify().ok
    events = journal.events(first["run_id"])
    granted = [e.data for e in events if e.kind == "approval_granted"]
    assert [(g["by"], g["via"], g["reason"], g["plan_hash"]) for g in granted] == [
        ("alice", "http", REASON, first["plan_hash"])
    ]
    assert [e.data["status"] for e in events if e.kind == "run_finished"] == ["succeeded"]
    assert [e.data["step"] for e in events if e.kind == "step_finished"].count("4") == 1
    callers = {
        (e.data["caller"], e.data["method"], e.data["path"].rsplit("/", 1)[-1])
        for e in events
        if e.kind == "http_request"
    }
    assert ("alice", "POST", "approve") in callers
    assert ("alice", "GET", "events") in callers
    assert ("sam", "POST", "runs") in callers


LOOP_TOOLS = '''
from planlock import ToolRegistry

registry = ToolRegistry()
SENT = []


@registry.tool(effect="read")
def members() -> list[str]:
    """Channel members (anyone can join: untrusted)."""
    return ["ana@example.org", "bo@example.org"]


@registry.tool(effect="send", free=["body"])
def message(to: str, body: str) -> str:
    """Send a direct message."""
    SENT.append(to)
    return "sent to " + to
'''

LOOP_PLAN = {
    "version": 1,
    "goal": "Say hello to every member",
    "steps": [
        {"id": "1", "tool": "members", "args": {}},
        {
            "id": "2",
            "tool": "message",
            "for_each": "{{steps.1.output}}",
            "max_items": 5,
            "args": {"to": "{{item}}", "body": "hello"},
        },
    ],
}


@pytest.mark.integration
@pytest.mark.browser
def test_a_loop_s_calls_are_one_request_in_the_page(tmp_path: Path) -> None:
    """A ``for_each`` step whose calls need a person shows them all in one request (issue 12):
    the page says so, lists each call's arguments and offers the values to endorse; one
    approval runs every call."""
    chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright
    from test_server_support import wait_for

    tools = tmp_path / "loop_tools.py"
    tools.write_text(LOOP_TOOLS, encoding="utf-8")
    with serve(tmp_path, "--workers", "1", tools=f"{tools}:registry") as server:
        r = httpx.post(f"{server.url}/api/runs", json={"plan": LOOP_PLAN}, headers=auth("sam"))
        assert r.status_code == 201, r.text
        sub = r.json()
        decision = {"plan_hash": sub["plan_hash"], "reason": "fine"}
        approve = f"{server.url}/api/approvals/{sub['approval_id']}/approve"
        assert httpx.post(approve, json=decision, headers=auth("alice")).status_code == 200

        def call_request() -> Any:
            listed = httpx.get(f"{server.url}/api/approvals", headers=auth("alice")).json()
            calls = [a for a in listed if a.get("kind") == "call"]
            return calls[0] if calls else None

        wait_for(lambda: call_request() is not None, timeout=30)
        pending = call_request()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(server.url + "/")
                page.get_by_test_id("token").fill(TOKEN_OF["alice"])
                page.get_by_test_id("sign-in").click()
                page.locator(f'[data-testid="pending-item"][data-id="{pending["id"]}"]').click()
                detail = page.locator("#detail")
                expect(detail).to_contain_text("The calls waiting: step 2, 2 items")
                args = page.get_by_test_id("call-args")
                expect(args).to_contain_text("ana@example.org")
                expect(args).to_contain_text("bo@example.org")
                offers = page.get_by_test_id("endorsable").locator("li")
                expect(offers).to_have_count(2)
                expect(offers.first).to_contain_text("a value of the calls above")
                page.get_by_test_id("reason").fill("both are members")
                page.get_by_test_id("approve").click()
                expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=30_000)
                assert errors == []
            finally:
                browser.close()
    journal = Journal.open(server.db)
    events = journal.events(sub["run_id"])
    asks = [e.data for e in events if e.kind == "approval_requested" and e.data["kind"] == "call"]
    assert len(asks) == 1
    assert [c["args"]["to"] for c in asks[0]["args"]["calls"]] == [
        "ana@example.org",
        "bo@example.org",
    ]
    started = [
        e.data["args"]["to"] for e in events if e.kind == "step_started" and e.data["step"] == "2"
    ]
    assert started == ["ana@example.org", "bo@example.org"]
    assert journal.verify().ok
