"""``planlock serve``: the HTTP approval service (FastAPI). Thin: it calls an ``Engine``.

Every ``/api`` route needs a bearer token whose caller holds one of the route's roles (``x-roles``
in the OpenAPI schema; ``admin`` may do everything); failed authentications are rate-limited per
client address. A submitter sees only their own runs, an approver also the runs that asked a
person. Every request with a known token, refused ones included, is journaled as an
``http_request`` event naming the caller, under the run it concerns (or under ``http`` when it
concerns none); the others are counted per client and window (``http_anonymous``). A request that
fails unexpectedly is also journaled as ``request_failed`` and answered with a generic 500. Bodies
and what they hold have limits (``ServerConfig``). Every response carries security headers (no
framing, no sniffing, no referrer) and ``/api`` responses are not cached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from planlock.errors import ApprovalDenied, DatabaseUnavailable, PlanInvalid
from planlock.journal import Journal
from planlock.server._auth import TokenStore
from planlock.server._config import ServerConfig
from planlock.server._engine import Engine
from planlock.server._guard import FailureLimiter
from planlock.server._limits import BodyLimit, LimitExceeded
from planlock.server._middleware import HTTP_RUN, JournalRequests, SecurityHeaders
from planlock.server._offload import Offload
from planlock.server._routes import api_routes
from planlock.server._tally import AnonymousTally

__all__ = ["HTTP_RUN", "ServerConfig", "create_app", "openapi_document"]

WEB = Path(__file__).parent / "web"
_log = logging.getLogger(__name__)
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"


async def _flush_every_window(tally: AnonymousTally, off: Offload) -> None:
    """Journal each window's anonymous counts when it ends, even if no request follows."""
    while True:
        await anyio.sleep(tally.seconds_to_next_window() + 0.01)
        try:
            await off.call(tally.flush, before=tally.window_start())
        except Exception:  # a journal that cannot write now must not stop the server
            _log.exception("could not journal the anonymous requests' counts")


def create_app(engine: Engine, tokens: TokenStore, config: ServerConfig | None = None) -> FastAPI:
    """The service over ``engine``; workers (``config.workers``) run while the app runs."""
    config = config or ServerConfig()

    tally = AnonymousTally(
        cast("Journal", getattr(engine, "journal", None)),  # None: only for openapi_document
        HTTP_RUN,
        window=config.anonymous_window,
        path_chars=config.journal_path_chars,
    )

    async def work(app: FastAPI) -> None:
        """The workers; if they fail, the server stops (``app.state.stop``) rather than serve
        on with nobody to execute what it approves. ``app.state.worker_failure`` says why."""
        try:
            await engine.work(config.workers)
        except Exception as exc:
            _log.exception("the server's workers stopped")
            app.state.worker_failure = exc
            stop = getattr(app.state, "stop", None)
            if stop is not None:
                stop()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            if config.workers:
                tg.start_soon(work, _app)
            tg.start_soon(_flush_every_window, tally, _app.state.offload)
            yield
            tg.cancel_scope.cancel()
        try:
            tally.flush()  # the window under way, counted so far
        except DatabaseUnavailable:
            _log.warning("the anonymous requests' last counts not journaled: no database")

    app = FastAPI(
        title="planlock",
        summary="Submit plans, approve them bound to their hash, follow runs, verify the journal.",
        version="1",
        docs_url=None,  # the interactive docs load scripts from a CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.tokens = tokens
    app.state.config = config
    app.state.offload = Offload(config.db_threads, config.db_wait)
    app.state.tally = tally
    app.state.limiter = FailureLimiter(config.auth_failures, config.auth_window)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # inside: its 413 is journaled
    app.add_middleware(JournalRequests)
    app.add_middleware(SecurityHeaders)  # outside the journaling: it sees the 500s it sends
    _errors(app)
    _pages(app)
    app.router.routes.extend(api_routes())  # shared: made once per process
    return app


def openapi_document() -> str:
    """The service's OpenAPI schema as committed in ``docs/openapi.json`` (sorted, indented)."""
    app = create_app(cast("Engine", None), TokenStore({}), ServerConfig(workers=0))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [
            {
                "code": str(e.get("type", "invalid")),
                "path": "$." + ".".join(str(p) for p in e.get("loc", ())[1:]),
                "message": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request", "issues": issues}, status_code=422)

    @app.exception_handler(PlanInvalid)
    async def invalid_plan(_request: Request, exc: PlanInvalid) -> JSONResponse:
        issues = [i.to_json() for i in exc.issues]
        body = {"detail": f"the plan is invalid: {len(issues)} issue(s)", "issues": issues}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(LimitExceeded)
    async def too_large(_request: Request, exc: LimitExceeded) -> JSONResponse:
        body = {"detail": f"over this server's limits: {exc}", "issues": exc.issues}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(ApprovalDenied)
    async def denied(_request: Request, exc: ApprovalDenied) -> JSONResponse:
        body = {"detail": f"the policy denies this plan: {exc.decision.reason}"}
        return JSONResponse(body, status_code=422)


def _pages(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Content-Security-Policy": CSP})

    app.mount("/static", StaticFiles(directory=WEB), name="static")
