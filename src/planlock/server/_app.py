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
from typing import Annotated, Any, cast

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from planlock.approval import EndorseAs, Endorsement
from planlock.core import Plan
from planlock.errors import (
    ApprovalDenied,
    CannotPlan,
    DatabaseUnavailable,
    LLMError,
    PlanInvalid,
    UsageError,
)
from planlock.journal import Journal
from planlock.planning import Planner
from planlock.queue import self_approval_problem
from planlock.server._auth import Caller, Role, TokenStore
from planlock.server._config import ServerConfig
from planlock.server._engine import Engine, RunScope
from planlock.server._guard import FailureLimiter, require
from planlock.server._limits import (
    BodyLimit,
    LimitExceeded,
    check_goal,
    check_plan,
    check_values,
)
from planlock.server._middleware import HTTP_RUN, JournalRequests, SecurityHeaders
from planlock.server._models import (
    ApprovalDetail,
    ApprovalSummary,
    DecisionIn,
    DecisionOut,
    DenyIn,
    EndorseIn,
    EndorsementOut,
    EndorseOut,
    ErrorOut,
    GoalIn,
    MeOut,
    PlanIn,
    RunDetail,
    RunSummary,
    SubmittedOut,
    VerifyOut,
)
from planlock.server._offload import Offload
from planlock.server._tally import AnonymousTally
from planlock.server._views import (
    approval_detail,
    approval_summary,
    event_out,
    run_detail,
    run_events,
    run_summary,
    shown,
)

__all__ = ["HTTP_RUN", "ServerConfig", "create_app", "openapi_document"]

WEB = Path(__file__).parent / "web"
MAX_SEQ = 2**63 - 1
"""The largest seq a journal can hold (SQLite's INTEGER, PostgreSQL's bigint): a larger
``after`` or ``Last-Event-ID`` is a 422, not a database error."""
_log = logging.getLogger(__name__)
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A malformed Authorization header."},
    401: {"model": ErrorOut, "description": "Missing or unknown bearer token."},
    403: {"model": ErrorOut, "description": "The caller's roles do not allow this."},
    429: {"model": ErrorOut, "description": "Too many failed authentications: see Retry-After."},
    503: {
        "model": ErrorOut,
        "description": "The database is unreachable (or, for a goal, no planner model).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (sent while the database is "
                "unreachable).",
                "schema": {"type": "integer"},
            }
        },
    },
}


def roles(*names: Role, errors: tuple[int, ...] = (), stream: bool = False) -> dict[str, Any]:
    """Route options: who may call it (admin always may), and its documented errors."""
    allowed = frozenset((*names, "admin"))
    responses = dict(_ERRORS)
    if stream:
        responses[200] = {
            "description": "Server-Sent Events: one per journal event (EventOut as JSON).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    for code in errors:
        responses.setdefault(code, {"model": ErrorOut})
    return {
        "dependencies": [Depends(require(allowed))],
        "openapi_extra": {"x-roles": sorted(allowed)},
        "responses": responses,
    }


def _caller(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


def _scope(caller: Caller) -> RunScope | None:
    """The runs ``caller`` may see (None: all, for an admin)."""
    if "admin" in caller.roles:
        return None
    return RunScope(submitted_by=caller.name, asked="approver" in caller.roles)


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

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            if config.workers:
                tg.start_soon(engine.work, config.workers)
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
    _routes(app, engine, config, app.state.offload)
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


def _routes(app: FastAPI, engine: Engine, config: ServerConfig, off: Offload) -> None:
    @app.get("/api/me", **roles("submitter", "approver"))
    async def me(request: Request) -> MeOut:
        """Who the token belongs to."""
        caller = _caller(request)
        return MeOut(name=caller.name, roles=sorted(caller.roles))

    async def queue_plan(request: Request, plan: Plan, inputs: dict[str, Any]) -> SubmittedOut:
        submitted = await off.run(engine.submit, plan, inputs=inputs, by=_caller(request).name)
        request.state.run_id = submitted.run_id
        return SubmittedOut(
            run_id=submitted.run_id,
            status=submitted.status,
            approval_id=submitted.approval_id,
            plan_hash=plan.hash,
            plan=plan.canonical(),
        )

    @app.post("/api/runs", status_code=201, **roles("submitter", errors=(422,)))
    async def submit_plan(request: Request, body: PlanIn) -> SubmittedOut:
        """Validate and assess a plan, and queue it (for approval when a person must see it)."""
        check_plan(body.plan, config.max_steps, config.max_goal_chars)
        check_values(body.inputs, "$.inputs", config.max_input_chars)
        return await queue_plan(request, Plan.parse(body.plan), body.inputs)

    @app.post("/api/goals", status_code=201, **roles("submitter", errors=(422, 502, 503)))
    async def submit_goal(request: Request, body: GoalIn) -> SubmittedOut:
        """Plan a goal with the server's planner model, then queue the plan like a submitted one."""
        check_goal(body.goal, config.max_goal_chars)
        check_values(body.context, "$.context", config.max_input_chars)
        if config.planner is None:
            raise HTTPException(503, "this server has no planner model (start it with --model)")
        planner = Planner(config.planner, engine.registry, journal=engine.journal)
        try:
            plan = await off.run(planner.plan, body.goal, body.context, run_id="planner")
        except CannotPlan as exc:
            raise HTTPException(422, f"the planner cannot serve this goal: {exc}") from None
        except LLMError as exc:
            raise HTTPException(502, f"the planner model failed: {exc}") from None
        return await queue_plan(request, plan, body.context)

    @app.get("/api/runs", **roles("submitter", "approver"))
    async def list_runs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[RunSummary]:
        """The newest runs the caller may see, newest first: a submitter their own, an approver
        also every run that asked a person for approval, an admin every run."""
        runs = await off.call(engine.runs, limit, _scope(_caller(request)))
        return [run_summary(r) for r in runs]

    async def find_run(request: Request, run_id: str) -> dict[str, Any]:
        request.state.run_id = run_id
        row = await off.call(engine.run, run_id)
        scope = _scope(_caller(request))
        if row is None or (scope is not None and not scope.holds(row)):
            request.state.run_id = None
            raise HTTPException(404, f"no run {run_id}")  # another's run: as if there were none
        return row

    @app.get("/api/runs/{run_id}", **roles("submitter", "approver", errors=(404,)))
    async def show_run(request: Request, run_id: str) -> RunDetail:
        """A run: its plan, inputs, approval requests and journal events."""
        row = await find_run(request, run_id)
        return run_detail(row, run_events(await off.call(engine.journal.events, run_id)))

    @app.get(
        "/api/runs/{run_id}/events",
        response_class=StreamingResponse,
        **roles("submitter", "approver", errors=(404,), stream=True),
    )
    async def stream_run(
        request: Request,
        run_id: str,
        after: Annotated[
            int, Query(ge=0, le=MAX_SEQ, description="Only events with a greater seq.")
        ] = 0,
        last_event_id: Annotated[
            int | None,
            Header(
                ge=0, le=MAX_SEQ, description="Sent by a reconnecting EventSource: like ``after``."
            ),
        ] = None,
    ) -> StreamingResponse:
        """The run's journal events as Server-Sent Events (``id`` = seq, ``event`` = kind,
        ``data`` = the event as JSON); the stream ends after ``run_finished``."""
        await find_run(request, run_id)
        last = max(after, last_event_id or 0)
        return StreamingResponse(
            _sse(engine, off, run_id, last, config.sse_poll),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/approvals", **roles("approver"))
    async def list_approvals() -> list[ApprovalSummary]:
        """Approval requests waiting for a person, oldest first."""
        return [approval_summary(a) for a in await off.call(engine.pending)]

    async def find_approval(request: Request, approval_id: str) -> dict[str, Any]:
        item = await off.call(engine.approval, approval_id)
        if item is None:
            raise HTTPException(404, f"no approval request {approval_id}")
        request.state.run_id = item["run_id"]
        return item

    @app.get("/api/approvals/{approval_id}", **roles("approver", errors=(404,)))
    async def show_approval(request: Request, approval_id: str) -> ApprovalDetail:
        """One request: the plan, its dependency graph, the risk report and, for a call, the
        exact arguments and their provenance."""
        return approval_detail(await find_approval(request, approval_id), engine.registry)

    async def decide(
        request: Request,
        approval_id: str,
        body: DecisionIn,
        approve: bool,
        endorse: EndorseAs | None = None,
    ) -> DecisionOut:
        item = await find_approval(request, approval_id)
        caller = _caller(request)
        if item["status"] != "pending":
            raise HTTPException(409, f"approval request {approval_id} is {item['status']}")
        if body.plan_hash != item["plan_hash"] or body.args_hash != item["args_hash"]:
            raise HTTPException(
                409,
                "this request is for plan "
                f"{item['plan_hash'][:12]} (args {str(item['args_hash'])[:12]}), not what you "
                "saw: reload it and decide again",
            )
        problem = self_approval_problem(item["submitted_by"], caller.name)
        if approve and problem and not config.allow_self_approval:
            raise HTTPException(403, problem)
        try:
            decision = await off.call(
                engine.decide,
                approval_id,
                approve=approve,
                by=caller.name,
                reason=body.reason,
                endorse=endorse,
            )
        except UsageError as exc:
            raise HTTPException(409, str(exc)) from None
        made = getattr(decision, "endorsements", ())
        if endorse is not None:
            return EndorseOut(
                **_decision_out(approval_id, item["run_id"], decision),
                endorsements=[_endorsement_out(e) for e in made],
            )
        return DecisionOut(**_decision_out(approval_id, item["run_id"], decision))

    @app.post("/api/approvals/{approval_id}/approve", **roles("approver", errors=(404, 409)))
    async def approve(request: Request, approval_id: str, body: DecisionIn) -> DecisionOut:
        """Approve, naming the plan hash (and a call's args hash) shown with the request."""
        return await decide(request, approval_id, body, approve=True)

    @app.post("/api/approvals/{approval_id}/deny", **roles("approver", errors=(404, 409)))
    async def deny(request: Request, approval_id: str, body: DenyIn) -> DecisionOut:
        """Deny, with a reason; the run finishes as denied (for a call, the step is refused)."""
        return await decide(request, approval_id, body, approve=False)

    @app.post("/api/approvals/{approval_id}/endorse", **roles("approver", errors=(404, 409)))
    async def endorse(request: Request, approval_id: str, body: EndorseIn) -> EndorseOut:
        """Approve a call held up by untrusted data in a sensitive parameter *and* endorse that
        value (bound to its hash and source, like the approval to the hashes you name): the
        same value from the same source then reaches this tool's parameter (any sensitive one
        with ``any_target``) without asking, in this run and later ones."""
        spec = EndorseAs(
            body.label, tuple(body.params) if body.params is not None else None, body.any_target
        )
        decided = await decide(request, approval_id, body, approve=True, endorse=spec)
        return cast("EndorseOut", decided)

    @app.get("/api/endorsements", **roles("approver"))
    async def list_endorsements(
        include_revoked: Annotated[bool, Query(description="Also revoked and expired.")] = False,
    ) -> list[EndorsementOut]:
        """Endorsed values (saved payees, known contacts), oldest first."""
        return [_endorsement_out(e) for e in await off.call(engine.endorsements, include_revoked)]

    @app.post("/api/endorsements/{endorsement_id}/revoke", **roles("approver", errors=(404, 409)))
    async def revoke(request: Request, endorsement_id: str) -> EndorsementOut:
        """Revoke an endorsement: from now on its value asks a person again (journaled)."""
        known = {e.id: e for e in await off.call(engine.endorsements, include_revoked=True)}
        if endorsement_id not in known:
            raise HTTPException(404, f"no endorsement {endorsement_id}")
        try:
            revoked = await off.call(engine.revoke, endorsement_id, _caller(request).name)
        except UsageError as exc:
            raise HTTPException(409, str(exc)) from None
        return _endorsement_out(revoked)

    @app.get("/api/journal/verify", **roles())
    async def verify() -> VerifyOut:
        """Recompute the journal's hash chain."""
        report = await off.call(engine.journal.verify)
        return VerifyOut(
            ok=report.ok, events=report.count, first_bad=report.first_bad, reason=report.reason
        )


def _decision_out(approval_id: str, run_id: str, decision: Any) -> dict[str, Any]:
    return {
        "approval_id": approval_id,
        "run_id": run_id,
        "approved": decision.approved,
        "by": decision.by,
        "reason": decision.reason,
        "plan_hash": decision.plan_hash,
        "step_id": decision.step_id,
        "args_hash": decision.args_hash,
        "at": decision.at,
    }


def _endorsement_out(e: Endorsement) -> EndorsementOut:
    return EndorsementOut.model_validate(e.to_json())


async def _sse(
    engine: Engine, off: Offload, run_id: str, after: int, poll: float
) -> AsyncIterator[str]:
    last, idle = after, 0.0
    while True:
        for event in await off.call(engine.journal.events, run_id, after=last):
            last = event.seq
            if not shown(event):  # exactly what the run view leaves out
                continue
            data = json.dumps(event_out(event).model_dump(), separators=(",", ":"))
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"
            if event.kind == "run_finished":
                return
            idle = 0.0
        await anyio.sleep(poll)
        idle += poll
        if idle >= 15:  # a comment keeps proxies from closing a quiet stream
            yield ": keep-alive\n\n"
            idle = 0.0
