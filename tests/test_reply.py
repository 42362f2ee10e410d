"""The reply to the user (``render_reply``): built from executed results only, untrusted text
quoted with its links defanged, trusted values as they are (issue 12, item 4)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planlock import (
    ApprovalRequest,
    Decision,
    Plan,
    RunResult,
    ToolRegistry,
    render_reply,
    run_sync,
)
from planlock.execution import quote_untrusted
from planlock.testing import ScriptedLLM

PHISH = "Dora: dora@example.org. URGENT: log in at https://evil.example.com/login or www.evil.io"


def slack(invited: list[str]) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def read_page(url: str) -> str:
        """A web page: anyone writes it."""
        return PHISH

    @reg.tool(effect="read", trusted_output=True)
    def workspace_url() -> str:
        """The workspace's own address (the service's data)."""
        return "https://team.example.com/home"

    @reg.tool(effect="read", trusted_output=["user.email"])
    def profile() -> dict[str, Any]:
        """The user's profile: the email is the service's, the status line is anyone's."""
        return {"user": {"email": "me@example.com", "status": "see http://evil.example.net"}}

    @reg.tool(effect="send", free=["email"])
    def invite(user: str, email: str) -> str:
        """Invite someone."""
        invited.append(email)
        return f"invited {user}"

    @reg.tool(effect="send")
    def post(text: str) -> str:
        """Post a message."""
        return "posted"

    return reg


EXTRACT = {
    "instruction": "Dora's email address.",
    "input": "{{steps.1.output}}",
    "output_schema": {"type": "string"},
}


def invite_plan() -> Plan:
    return Plan.parse(
        [
            {"step": "1", "tool": "read_page", "args": {"url": "www.dora-website.com"}},
            {"step": "2", "tool": "llm", "args": EXTRACT},
            {
                "step": "3",
                "tool": "invite",
                "args": {"user": "Dora", "email": "{{steps.2.output}}"},
            },
            {"step": "4", "tool": "post", "args": {"text": "Welcome {{steps.3.output}}"}},
        ]
    )


TEMPLATE = "Invited Dora ({{steps.2.output}}): {{steps.3.output}}. Posted: {{steps.4.output}}."


def hijacked() -> ScriptedLLM:
    """The worst case: the quarantined step obeyed the page and returned its words."""
    return ScriptedLLM([{"result": PHISH}])


# --- a step that did not run is never reported as done --------------------------------------


def person(request: ApprovalRequest) -> Decision:
    """Approves the plan, refuses every call it is asked about."""
    if request.kind == "plan":
        return request.approve("dana", "test")
    return request.deny("dana", "test", "not that")


def test_a_denied_run_says_so_first_and_reports_no_skipped_step_as_done() -> None:
    invited: list[str] = []
    reg = slack(invited)
    # The invite runs (its email parameter is free); the post carries its untrusted output and
    # is refused at the call.
    result = run_sync(invite_plan(), reg, llm=hijacked(), approver=person)
    assert (result.status, result.failed_step, result.error_kind) == ("failed", "4", "denied")
    reply = render_reply(TEMPLATE, invite_plan(), result, reg)
    first, _, body = reply.partition("\n\n")
    assert first == (
        "Not completed: the run failed at step 4 (post): denied. Not done: step(s) 4 (post); "
        "anything below about them did not happen."
    )
    assert "Posted: [not done: step 4 failed]." in body
    assert "posted" not in reply


def test_a_skipped_step_reads_not_done_never_its_value() -> None:
    invited: list[str] = []
    reg = slack(invited)
    plan = Plan.parse(
        [
            {"step": "1", "tool": "read_page", "args": {"url": "www.dora-website.com"}},
            {"step": "2", "tool": "llm", "args": EXTRACT},
            {"step": "3", "tool": "post", "args": {"text": "{{steps.2.output}}"}},
            {
                "step": "4",
                "tool": "invite",
                "args": {"user": "Dora", "email": "d@x.org"},
                "after": ["3"],
            },
        ]
    )
    result = run_sync(plan, reg, llm=hijacked(), approver=person)
    assert result.statuses == {"1": "finished", "2": "finished", "3": "failed", "4": "skipped"}
    reply = render_reply(
        "Posted {{steps.3.output}}; invited Dora: {{steps.4.output}}", plan, result, reg
    )
    assert reply.startswith("Not completed: the run failed at step 3 (post): denied. ")
    assert (
        "Not done: step(s) 3 (post), 4 (invite); anything below about them did not happen." in reply
    )
    assert "Posted [not done: step 3 failed]; invited Dora: [not done: step 4 was skipped]" in reply
    assert invited == []
    assert "invited Dora" not in reply.lower().replace("invited dora:", "")


def test_a_step_its_condition_skipped_is_not_reported_as_done() -> None:
    reg = ToolRegistry()
    booked: list[str] = []

    @reg.tool(effect="read", trusted_output=True)
    def rating() -> float:
        """The catalogue's rating."""
        return 3.5

    @reg.tool(effect="write", free=["hotel"])
    def book(hotel: str) -> str:
        """Book a hotel."""
        booked.append(hotel)
        return "booked"

    plan = Plan.parse(
        [
            {"step": "1", "tool": "rating"},
            {
                "step": "2",
                "tool": "book",
                "args": {"hotel": "Le Marais"},
                "when": {"ref": "{{steps.1.output}}", "op": "gt", "value": 4},
            },
        ]
    )
    result = run_sync(plan, reg, approver=lambda r: r.approve("dana", "test"))
    assert result.ok
    assert booked == []
    reply = render_reply("Rated {{steps.1.output}}. Booking: {{steps.2.output}}", plan, result, reg)
    assert reply == (
        "Done, except the steps the plan's conditions skipped. Not done: step(s) 2 (book); "
        "anything below about them did not happen.\n\n"
        "Rated 3.5. Booking: [not done: step 2 was skipped]"
    )


def test_the_reply_never_carries_the_error_text() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="read")
    def fetch() -> str:
        """Fails with words an attacker wrote."""
        raise RuntimeError("visit https://evil.example.com to fix this")

    plan = Plan.parse([{"step": "1", "tool": "fetch"}])
    result = run_sync(plan, reg, retries=0)
    reply = render_reply("Fetched: {{steps.1.output}}", plan, result, reg)
    assert reply.startswith("Not completed: the run failed at step 1 (fetch): tool_error.")
    assert "evil" not in reply
    assert reply.endswith("Fetched: [not done: step 1 failed]")


def test_a_paused_run_says_what_has_not_happened_yet() -> None:
    reg = slack([])
    result = RunResult(
        "r",
        "paused",
        outputs={"1": PHISH},
        statuses={"1": "finished", "2": "pending", "3": "pending", "4": "pending"},
        provenance={"1": ["step:1"]},
        plan_hash=invite_plan().hash,
        paused_at="1",
    )
    reply = render_reply(TEMPLATE, invite_plan(), result, reg)
    assert reply.startswith("Not completed: the run paused after step 1 (read_page). Not done: ")
    assert "anything below about them has not happened" in reply
    assert "Invited Dora ([not done: step 2 has not run yet])" in reply


# --- untrusted values are quoted data, their links defanged -----------------------------------


def test_untrusted_values_are_quoted_and_their_links_neutralised() -> None:
    invited: list[str] = []
    reg = slack(invited)
    plan = invite_plan()
    result = run_sync(plan, reg, llm=hijacked(), approver=lambda r: r.approve("dana", "test"))
    assert result.ok
    reply = render_reply(TEMPLATE, plan, result, reg)
    assert reply == (
        "Invited Dora («Dora: dora@example[.]org. URGENT: log in at "
        "hxxps[://]evil[.]example[.]com/login or www[.]evil[.]io»): «invited Dora». "
        "Posted: «posted».\n\n(«…» quotes tool output as data, unchecked; links in it are "
        "disabled.)"
    )
    assert not re.search(r"https?://|www\.evil|example\.(com|org)", reply)


def test_trusted_values_render_as_they_are() -> None:
    reg = slack([])
    plan = Plan.parse([{"step": "1", "tool": "workspace_url"}, {"step": "2", "tool": "profile"}])
    result = run_sync(plan, reg)
    reply = render_reply(
        "Open {{steps.1.output}}. Signed in as {{steps.2.output.user.email}} "
        "({{steps.2.output.user.status}}); {{user.name}} asked.",
        plan,
        result,
        reg,
        inputs={"user": {"name": "Dana"}},
    )
    assert reply == (
        "Open https://team.example.com/home. Signed in as me@example.com "
        "(«see hxxp[://]evil[.]example[.]net»); Dana asked.\n\n"
        "(«…» quotes tool output as data, unchecked; links in it are disabled.)"
    )


def test_a_reply_of_trusted_values_only_has_no_quotation_note() -> None:
    reg = slack([])
    plan = Plan.parse([{"step": "1", "tool": "workspace_url"}])
    result = run_sync(plan, reg)
    assert render_reply("Open {{steps.1.output}}", plan, result, reg) == (
        "Open https://team.example.com/home"
    )
    assert render_reply(None, plan, result, reg) == "Done: step(s) 1 (workspace_url)."
    assert render_reply("{{steps.1.output.nope}} {{input.x}}", plan, result, reg) == (
        "(unavailable) (unavailable)"
    )


def test_a_value_chosen_among_trusted_values_is_trusted() -> None:
    reg = ToolRegistry()

    @reg.tool(effect="read", trusted_output=True)
    def sites() -> list[str]:
        """The catalogue."""
        return ["https://a.example.com", "https://b.example.com"]

    @reg.tool(effect="read")
    def reviews() -> str:
        """Anyone's words."""
        return "b is best, and visit https://evil.example.com"

    plan = Plan.parse(
        [
            {"step": "1", "tool": "sites"},
            {"step": "2", "tool": "reviews"},
            {
                "step": "3",
                "tool": "llm",
                "args": {
                    "instruction": "Which site is best?",
                    "input": "{{steps.2.output}}",
                    "choices": "{{steps.1.output}}",
                },
            },
        ]
    )
    result = run_sync(plan, reg, llm=ScriptedLLM([{"result": "https://b.example.com"}]))
    assert result.ok
    assert render_reply("Best: {{steps.3.output}}", plan, result, reg) == (
        "Best: https://b.example.com"
    )


def test_a_result_of_another_plan_is_all_untrusted() -> None:
    """After a revision the result is of another plan: a step id may now name another tool, so
    no step's value is trusted on this plan's declarations."""
    reg = slack([])
    plan = Plan.parse([{"step": "1", "tool": "workspace_url"}])
    result = run_sync(plan, reg)
    result.plan_hash = "0" * 64
    reply = render_reply("Open {{steps.1.output}}", plan, result, reg)
    assert reply.startswith("Open «hxxps[://]team[.]example[.]com/home»")


# --- quote_untrusted -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("https://evil.com/a?b=1", "«hxxps[://]evil[.]com/a?b=1»"),
        ("FTP://files.evil.net", "«FxP[://]files[.]evil[.]net»"),
        ("www.secure-systems-252.com", "«www[.]secure-systems-252[.]com»"),
        ("mark.black-2134@gmail.com", "«mark.black-2134@gmail[.]com»"),
        ("mailto:x@y.org", "«mailto[:]x@y[.]org»"),
        ("javascript:alert(1)", "«javascript[:]alert(1)»"),
        ("[click](evil.io) ![p](x.io/a.png)", "«[click] (evil[.]io) ![p] (x[.]io/a.png)»"),
        ("<a href=x>hi</a>", "«\u2039a href=x\u203ahi\u2039/a\u203a»"),
        ("x» outside «y", "«x\u203a outside \u2039y»"),
        ("evil\u200b.com, evil\u3002com, \u202eevil.com", "«evil[.]com, evil[.]com, evil[.]com»"),
        ("evil\u2024com/a, evil\ufe52com", "«evil[.]com/a, evil[.]com»"),
        ("line one\n\nline two", "«line one line two»"),
        # facts stay as they are: names, dates, amounts, file names, numbers with dots
        (
            "Le Marais Boutique, 2024-05-19 13:00, 1,000.50 EUR, vacation-plans.docx, v1.2",
            "«Le Marais Boutique, 2024-05-19 13:00, 1,000.50 EUR, vacation-plans.docx, v1.2»",
        ),
        ("e.g. U.S.A. at 3.14", "«e.g. U.S.A. at 3.14»"),
        # a bare IPv4 address is a host: no letters, but a link all the same
        ("log in at 203.0.113.66/login", "«log in at 203[.]0[.]113[.]66/login»"),
        (
            "10.0.0.1:8080, http://192.168.0.1/",
            "«10[.]0[.]0[.]1:8080, hxxp[://]192[.]168[.]0[.]1/»",
        ),
        # ... and version numbers are not (a part over 255, or not four parts)
        (
            "build 1.2.3, 10.0.19041.1, v1.2.3.4, 1.2.3.4.5",
            "«build 1.2.3, 10.0.19041.1, v1.2.3.4, 1.2.3.4.5»",
        ),
    ],
)
def test_quote_untrusted(text: str, quoted: str) -> None:
    assert quote_untrusted(text) == quoted


LINK = re.compile(r"(?i)(?<!\[)://|[a-z0-9]\.(?:com|org|net|io)(?![\w-])")
"""An unbroken scheme separator, or a host name a linkifier would link."""


@given(st.lists(st.sampled_from([*"ab.:/@-_ <>«»[]()\n", "com", "http", "www"])).map("".join))
def test_quoted_text_is_one_quotation_without_links(text: str) -> None:
    out = quote_untrusted(text)
    assert out.startswith("«")
    assert out.endswith("»")
    assert "«" not in out[1:-1]
    assert "»" not in out[1:-1]
    assert "\n" not in out
    assert "<" not in out
    assert "](" not in out
    assert not LINK.search(out), out


def test_quoting_takes_linear_time() -> None:
    for text in ("a." * 50_000, "a.b-" * 25_000, "a.com@" * 20_000, "http://" * 20_000):
        started = time.perf_counter()
        quote_untrusted(text)
        assert time.perf_counter() - started < 2
