"""ASGI middleware of the approval service: every request journaled (``http_request`` for a
known caller; ``http_anonymous``, in aggregate, for the others), every unexpected exception
journaled (``request_failed``) and answered with a generic 500, and the security headers on every
response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

from planlock.server._auth import Caller
from planlock.server._engine import Engine
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
        started: list[int] = []

        def caller() -> Caller | None:
            found: Caller | None = state.get("caller")
            return found

        tally: AnonymousTally = scope["app"].state.tally
        client = str((scope.get("client") or ["?"])[0])[:64]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
                who = caller()
                if who is None:  # no known token: counted, journaled per client and window
                    tally.add(client, scope["method"], scope["path"], message["status"])
                else:
                    engine.journal.record(
                        state.get("run_id") or HTTP_RUN,
                        "http_request",
                        {
                            "method": scope["method"],
                            "path": cut(scope["path"], tally.path_chars),
                            "status": message["status"],
                            "caller": who.name,
                            "roles": sorted(who.roles),
                            "client": client,
                        },
                    )
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            route = scope.get("route")
            _log.exception("%s %s failed", scope["method"], scope["path"])
            who = caller()
            engine.journal.record(
                state.get("run_id") or HTTP_RUN,
                "request_failed",
                {
                    "method": scope["method"],
                    "route": getattr(route, "path", None),  # the template, never the raw path
                    "status": started[0] if started else 500,
                    "error": type(exc).__name__,
                    "caller": who.name if who else None,
                },
            )
            if started:  # the response is under way: all that is left is to drop it
                raise
            body = {"detail": "internal server error (journaled as request_failed)"}
            await JSONResponse(body, status_code=500)(scope, receive, sending)


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
