"""ASGI middleware of the approval service: every request journaled (``http_request`` for a
known caller; ``http_anonymous``, in aggregate, for the others), every unexpected exception
journaled (``request_failed``) and answered with a generic 500, a database that went away
answered with 503 and ``Retry-After``, and the security headers on every
response."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

from planlock.db import reconnect_wait
from planlock.errors import DatabaseUnavailable
from planlock.server._auth import Caller
from planlock.server._engine import Engine
from planlock.server._offload import Offload
from planlock.server._tally import AnonymousTally, cut

__all__ = ["HTTP_RUN", "SECURITY_HEADERS", "JournalRequests", "SecurityHeaders"]

HTTP_RUN = "http"
"""The journal run id of ``http_request`` events that concern no run."""
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every response, besides ``frame-ancestors 'none'`` in its Content-Security-Policy."""
_log = logging.getLogger(__name__)


class JournalRequests:
    """ASGI middleware: journal every HTTP request of a known caller as ``http_request``, and
    count the others in the app's ``AnonymousTally``; journal an unexpected exception as
    ``request_failed`` and answer it with a generic 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        engine: Engine = scope["app"].state.engine
        off: Offload = scope["app"].state.offload
        started: list[int] = []

        def caller() -> Caller | None:
            found: Caller | None = state.get("caller")
            return found

        tally: AnonymousTally = scope["app"].state.tally
        client = str((scope.get("client") or ["?"])[0])[:64]

        def request_data(status: int) -> dict[str, Any] | None:
            """The ``http_request`` event's data; None for a request without a known token."""
            who = caller()
            if who is None:
                return None
            return {
                "method": scope["method"],
                "path": cut(scope["path"], tally.path_chars),
                "status": status,
                "caller": who.name,
                "roles": sorted(who.roles),
                "client": client,
            }

        def count(status: int) -> None:
            """Count an anonymous request (journaled per client and window)."""
            tally.add(client, scope["method"], scope["path"], status)

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                run = state.get("run_id") or HTTP_RUN
                data = request_data(message["status"])
                if data is not None:
                    await off.call(engine.journal.record, run, "http_request", data)
                else:  # no known token: counted, journaled per client and window
                    try:
                        await off.call(count, message["status"])
                    except DatabaseUnavailable:  # counted; journaled with a later window
                        _log.warning("http_anonymous not journaled: the database is unreachable")
                started.append(message["status"])
            await send(message)

        try:
            with off.request():
                await self.app(scope, receive, sending)
        except DatabaseUnavailable as exc:
            if started:
                raise
            await self._unavailable(scope, receive, send, exc, state, request_data, count)
        except Exception as exc:
            route = scope.get("route")
            _log.exception("%s %s failed", scope["method"], scope["path"])
            who = caller()
            failed = {
                "method": scope["method"],
                "route": getattr(route, "path", None),  # the template, never the raw path
                "status": started[0] if started else 500,
                "error": type(exc).__name__,
                "caller": who.name if who else None,
            }
            try:
                await off.call(
                    engine.journal.record, state.get("run_id") or HTTP_RUN, "request_failed", failed
                )
            except DatabaseUnavailable:
                _log.warning("request_failed not journaled: the database is unreachable")
            if started:  # the response is under way: all that is left is to drop it
                raise
            body = {"detail": "internal server error (journaled as request_failed)"}
            await JSONResponse(body, status_code=500)(scope, receive, sending)

    @staticmethod
    async def _unavailable(
        scope: Any,
        receive: Any,
        send: Any,
        exc: DatabaseUnavailable,
        state: dict[str, Any],
        request_data: Callable[[int], dict[str, Any] | None],
        count: Callable[[int], None],
    ) -> None:
        """The database is unreachable: answer 503 with ``Retry-After``, and journal the request
        (a known caller's; an anonymous one is counted in the tally) if the database is back
        already (one attempt, no waiting)."""
        app = scope["app"]
        engine: Engine = app.state.engine
        retry_after = str(app.state.config.retry_after)
        _log.warning("%s %s: %s", scope["method"], scope["path"], exc)
        data = request_data(503)

        def note() -> None:
            with reconnect_wait(0):
                if data is None:
                    count(503)
                else:
                    run = state.get("run_id") or HTTP_RUN
                    error = {**data, "error": type(exc).__name__}
                    engine.journal.record(run, "http_request", error)

        with contextlib.suppress(DatabaseUnavailable):  # the journal is in that database
            await anyio.to_thread.run_sync(note)
        body = {"detail": "the database is unreachable; retry later"}
        response = JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})
        await response(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: security headers on every response, and ``no-store`` on ``/api``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", ()))
                headers = MutableHeaders(raw=message["headers"])
                csp = headers.get("content-security-policy", "").strip().rstrip(";")
                if "frame-ancestors" not in csp:
                    directives = [csp] if csp else []
                    headers["Content-Security-Policy"] = "; ".join(
                        [*directives, "frame-ancestors 'none'"]
                    )
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if scope["path"] == "/api" or scope["path"].startswith("/api/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, sending)
