"""planlock serve against strangers: requests without a known token are journaled in aggregate
(``http_anonymous``), token guessing is rate-limited per client (429), and a malformed header
is a 4xx, never a 500."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server_support import TOKEN_OF, auth, make_app, serve, tls, wait_for

from planlock import Journal, ToolRegistry, demo
from planlock.server._app import ServerConfig
from planlock.server._guard import FailureLimiter
from planlock.server._tally import OVERFLOW_CLIENT, AnonymousTally
from planlock.testing import memory_journal


def journal_bytes(journal: Journal, after: int = 0) -> int:
    """The journal's size as the bytes of its events' JSON (hashes and all) after seq ``after``."""
    return sum(len(e.model_dump_json()) for e in journal.events() if e.seq > after)


def anonymous(journal: Journal) -> list[dict[str, Any]]:
    return [e.data for e in journal.events("http") if e.kind == "http_anonymous"]


def test_a_thousand_anonymous_requests_with_long_paths_grow_the_journal_under_10_kb(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    app, engine = make_app(tmp_path / "anon.db", registry, ServerConfig(workers=0))
    long = "/api/runs/" + "A" * 4000
    statuses: list[int] = []
    with TestClient(app) as c:
        for i in range(1000):
            path = f"{long}{i}" if i % 2 else f"/api/{secrets.token_hex(1000)}"
            headers = {} if i % 3 else {"Authorization": f"Bearer wrong-{i}"}
            statuses.append(c.get(path, headers=headers).status_code)
        assert c.get("/api/me", headers=auth("sam")).status_code == 429  # guessed too often
        other = TestClient(app, client=("192.0.2.1", 1))
        assert other.get("/api/me", headers=auth("sam")).status_code == 200
    journal = engine.journal
    grown = journal_bytes(journal)
    print(f"\n1,000 anonymous requests: the journal grew by {grown:,} bytes")  # noqa: T201
    assert grown < 10 * 1024, grown
    tallies = anonymous(journal)  # one client; one window, or two if a minute turned meanwhile
    assert 1 <= len(tallies) <= 2
    assert all(t["client"] == "testclient" for t in tallies)
    assert sum(t["requests"] for t in tallies) == 1001
    statuses.append(429)  # sam's own request from the locked-out address
    counted: Counter[str] = Counter()
    for t in tallies:
        counted.update(t["statuses"])
    assert counted == Counter({str(s): statuses.count(s) for s in set(statuses)})
    assert set(counted) == {"401", "404", "429"}  # 404: /api/<hex> is no route
    for t in tallies:
        assert all(len(p) <= 128 for p in t["paths"])
        assert len(t["paths"]) <= 8
        assert sum(t["paths"].values()) + t["other_paths"] == t["requests"]
    assert max(len(t["paths"]) for t in tallies) == 8  # each window keeps its first 8 paths
    assert not [e for e in journal.events() if e.kind == "http_request" and not e.data["caller"]]
    assert journal.verify().ok


def test_the_tally_writes_one_event_per_client_and_window() -> None:
    journal = memory_journal()
    now = [1_000_000.0]
    tally = AnonymousTally(journal, "http", window=60, path_chars=20, clock=lambda: now[0])
    tally.add("10.0.0.1", "GET", "/api/me", 401)
    tally.add("10.0.0.2", "GET", "/api/runs/" + "x" * 50, 401)
    tally.add("10.0.0.1", "POST", "/api/runs", 413)
    assert journal.events() == []  # nothing until the window ends
    now[0] += 60
    tally.add("10.0.0.1", "GET", "/", 200)  # the next window: the last one is written first
    first = [e.data for e in journal.events()]
    assert [(d["client"], d["requests"]) for d in first] == [("10.0.0.1", 2), ("10.0.0.2", 1)]
    assert first[0]["statuses"] == {"401": 1, "413": 1}
    assert first[0]["methods"] == {"GET": 1, "POST": 1}
    assert first[0]["until"] == "1970-01-12T13:47:00+00:00"
    assert first[1]["paths"] == {"/api/runs/xxxxxxxxx…": 1}
    tally.flush()
    assert [e.data["requests"] for e in journal.events()] == [2, 1, 1]
    # past max_clients addresses in a window, the rest are counted together
    small = AnonymousTally(journal, "http", max_clients=2, clock=lambda: now[0])
    for i in range(5):
        small.add(f"10.1.0.{i}", "GET", "/", 401)
    small.flush()
    assert [(e.data["client"], e.data["requests"]) for e in journal.events()[3:]] == [
        (OVERFLOW_CLIENT, 3),
        ("10.1.0.0", 1),
        ("10.1.0.1", 1),
    ]


def test_a_window_is_journaled_when_it_ends_even_if_no_request_follows(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    config = ServerConfig(workers=0, anonymous_window=0.2)
    app, engine = make_app(tmp_path / "w.db", registry, config)
    with TestClient(app) as c:
        assert c.get("/api/runs").status_code == 401
        wait_for(lambda: bool(anonymous(engine.journal)), timeout=5)
        (tally,) = anonymous(engine.journal)
        assert (tally["requests"], tally["statuses"]) == (1, {"401": 1})


def test_the_limiter_forgets_the_oldest_address_past_its_bound() -> None:
    now = [0.0]
    limiter = FailureLimiter(2, 60, max_clients=3, clock=lambda: now[0])
    for address in ("a", "b", "c", "d"):
        limiter.failed(address)
        limiter.failed(address)
    assert limiter.retry_after("a") is None  # forgotten: memory stays bounded
    assert [limiter.retry_after(x) for x in "bcd"] == [60, 60, 60]
    assert FailureLimiter(0, 60).retry_after("a") is None  # 0: no limit


def test_failed_authentication_is_rate_limited_per_client(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    config = ServerConfig(workers=0, auth_failures=5, auth_window=30)
    app, engine = make_app(tmp_path / "rate.db", registry, config)
    now = [5000.0]
    app.state.limiter.clock = lambda: now[0]
    attacker = TestClient(app, client=("203.0.113.7", 4000))
    honest = TestClient(app, client=("198.51.100.1", 4000))
    with attacker:
        codes = [
            attacker.get("/api/me", headers={"Authorization": f"Bearer guess-{i}"}).status_code
            for i in range(8)
        ]
        assert codes == [401] * 5 + [429] * 3
        # the right token from the locked-out address gets the same 429: guessing learns nothing
        r = attacker.get("/api/me", headers=auth("sam"))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "30"
        assert "too many failed authentications" in r.json()["detail"]
        # another address is not affected, and a missing token is not a failure
        assert honest.get("/api/me", headers=auth("sam")).status_code == 200
        assert [honest.get("/api/me").status_code for _ in range(8)] == [401] * 8
        now[0] += 12
        assert attacker.get("/api/me", headers=auth("sam")).headers["retry-after"] == "18"
        now[0] += 18.5  # the oldest failure has left the window
        assert attacker.get("/api/me", headers=auth("sam")).status_code == 200
        codes = [
            attacker.get("/api/me", headers={"Authorization": f"Bearer again-{i}"}).status_code
            for i in range(6)
        ]
        assert codes == [401] * 5 + [429]
    # Summed over the events: the tally's windows follow the wall clock (not the limiter's), and
    # a slow run can cross a window's end, which journals a client's requests in two events.
    tallies: dict[str, Counter[str]] = {}
    for d in anonymous(engine.journal):
        tallies.setdefault(d["client"], Counter()).update(d["statuses"])
    assert tallies["203.0.113.7"] == {"401": 10, "429": 6}
    assert tallies["198.51.100.1"] == {"401": 8}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("Authorization", "Bearer")], 400),
        ([("Authorization", "Bearer ")], 400),
        ([("Authorization", "Bearer two words")], 400),
        ([("Authorization", b"Bearer caf\xe9-token-01")], 400),  # not ASCII
        ([("Authorization", "Bearer sam-token-0001\x7f")], 400),
        ([("Authorization", "Basic c2FtOnNlY3JldA==")], 401),
        ([("Authorization", "")], 401),
        ([("Authorization", f"Bearer {TOKEN_OF['sam']}")] * 2, 400),  # duplicated, even if right
        (
            [
                ("Authorization", f"Bearer {TOKEN_OF['alice']}"),
                ("Authorization", f"Bearer {TOKEN_OF['sam']}"),
            ],
            400,
        ),
    ],
    ids=[
        "scheme-only",
        "empty-token",
        "two-words",
        "latin-1",
        "control-char",
        "basic",
        "empty",
        "duplicated",
        "two-callers",
    ],
)
def test_a_malformed_authorization_header_is_a_4xx(
    tmp_path: Path, registry: ToolRegistry, headers: list[tuple[str, Any]], status: int
) -> None:
    app, engine = make_app(tmp_path / "h.db", registry, ServerConfig(workers=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/me", headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/me", headers=auth("sam")).status_code == 200
    assert not [e for e in engine.journal.events() if e.kind == "request_failed"]


def test_other_malformed_headers_are_4xx_never_500(tmp_path: Path, registry: ToolRegistry) -> None:
    app, engine = make_app(tmp_path / "o.db", registry, ServerConfig(workers=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        body = {"plan": demo.PLAN, "inputs": demo.INPUTS}
        run = c.post("/api/runs", json=body, headers=auth("sam")).json()["run_id"]
        events = f"/api/runs/{run}/events"
        sent: list[tuple[str, str, list[tuple[bytes, bytes]]]] = [
            ("GET", events, [(b"Last-Event-ID", "\u0661".encode())]),  # an Arabic 1
            ("GET", events, [(b"Last-Event-ID", b"9" * 400)]),  # past any database integer
            ("GET", events, [(b"Last-Event-ID", str(2**63).encode())]),
            ("GET", f"{events}?after={2**63}", []),
            ("POST", "/api/runs", [(b"Content-Type", b"application/json; charset=utf-16")]),
            ("POST", "/api/runs", [(b"Content-Type", b"text/plain\xff")]),
        ]
        token = [(b"Authorization", f"Bearer {TOKEN_OF['sam']}".encode())]
        for method, url, extra in sent:
            r = c.request(method, url, headers=[*token, *extra], content=b"{}")
            assert 400 <= r.status_code < 500, (url, extra, r.status_code, r.text)
    assert not [e for e in engine.journal.events() if e.kind == "request_failed"]


@pytest.mark.anyio
async def test_a_malformed_content_length_is_400() -> None:
    """Servers usually refuse these before the app; the app refuses them too."""
    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    from planlock.server._limits import BodyLimit

    for values in ([b"abc"], [b"-1"], [b"2", b"2"], [b"1e3"]):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], into: list[dict[str, Any]] = sent) -> None:
            into.append(message)

        headers = [(b"content-length", v) for v in values]
        scope = {"type": "http", "method": "POST", "path": "/api/runs", "headers": headers}
        await BodyLimit(app, 1024)(scope, receive, send)
        assert sent[0]["status"] == 400, values
    assert reached == []


def guesses(base: str, forwarded: list[str]) -> list[int]:
    """A wrong token from loopback per address, each request claiming that address in
    ``X-Forwarded-For``."""
    return [
        httpx.get(
            f"{base}/api/me",
            headers={"Authorization": f"Bearer guess-{i}", "X-Forwarded-For": address},
            timeout=30,
            verify=tls(),
        ).status_code
        for i, address in enumerate(forwarded)
    ]


ROTATED = [f"203.0.113.{i}" for i in range(1, 7)]


@pytest.mark.integration
@pytest.mark.slow  # starts `planlock serve`, twice
def test_a_local_process_cannot_rotate_forwarded_addresses_past_the_limit(
    tmp_path: Path,
) -> None:
    """Attack: a process on the server's machine guesses tokens, claiming a new client address
    in ``X-Forwarded-For`` each time (uvicorn's default trusts that header from 127.0.0.1).
    planlock serve trusts no proxy unless told to: the guesses all count against 127.0.0.1."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve(tmp_path / "a", "--auth-failures", "3") as server:
        assert guesses(server.url, ROTATED) == [401] * 3 + [429] * 3
    # Behind a real reverse proxy on 127.0.0.1, the operator names it: each forwarded address is
    # then a client of its own (and the proxy must set the header itself).
    with serve(tmp_path / "b", "--auth-failures", "3", "--forwarded-allow-ips", "127.0.0.1") as s:
        assert guesses(s.url, ROTATED) == [401] * 6
        assert guesses(s.url, [ROTATED[0]] * 3) == [401, 401, 429]  # 3 from one address
