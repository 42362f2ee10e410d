"""ASGI middleware of the approval service: every request journaled (``http_request``), every
unexpected exception journaled (``request_failed``) and answered with a generic 500, a database
that went away answered with 503 and ``Retry-After``, and the security headers on every
response."""

from __future__ import annotations

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
    """ASGI middleware: journal every HTTP request as ``http_request`` with its caller; journal
    an unexpected exception as ``request_failed`` and answer it with a generic 500."""

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

        def request_data(status: int) -> dict[str, Any]:
            who = caller()
            return {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "caller": who.name if who else None,
                "roles": sorted(who.roles) if who else [],
                "client": (scope.get("client") or ["?"])[0],
            }

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                run = state.get("run_id") or HTTP_RUN
                data = request_data(message["status"])
                await off.call(engine.journal.record, run, "http_request", data)
                started.append(message["status"])
            await send(message)

        try:
            with off.request():
                await self.app(scope, receive, sending)
        except DatabaseUnavailable as exc:
            if started:
                raise
            await self._unavailable(scope, receive, send, exc, state, request_data)
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
        request_data: Callable[[int], dict[str, Any]],
    ) -> None:
        """The database is unreachable: answer 503 with ``Retry-After``, and journal the request
        if the database is back already (one attempt, no waiting)."""
        app = scope["app"]
        engine: Engine = app.state.engine
        retry_after = str(app.state.config.retry_after)
        _log.warning("%s %s: %s", scope["method"], scope["path"], exc)
        data = {**request_data(503), "error": type(exc).__name__}
        try:
            with reconnect_wait(0):
                await anyio.to_thread.run_sync(
                    engine.journal.record, state.get("run_id") or HTTP_RUN, "http_request", data
                )
        except DatabaseUnavailable:
            pass  # the journal is in that database: nothing to record it in
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
