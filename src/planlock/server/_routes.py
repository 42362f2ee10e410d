"""The ``/api`` routes of ``planlock serve``, built once per process (``api_routes``).

Each route names the roles that may call it (``roles``: ``x-roles`` in the OpenAPI schema) and
its documented errors. A handler takes the engine, config and offload of the app serving the
request from ``request.app.state`` (``create_app`` sets them), so every app of a process shares
the same route objects: FastAPI analyses a route's signature and models when the route is made,
~60 ms of CPU for these fifteen.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.routing import BaseRoute

from planlock.approval import EndorseAs, Endorsement
from planlock.core import Plan
from planlock.errors import CannotPlan, LLMError, UsageError
from planlock.planning import Planner
from planlock.queue import self_approval_problem
from planlock.server._auth import Caller, Role
from planlock.server._config import ServerConfig
from planlock.server._engine import Engine, RunScope
from planlock.server._guard import require
from planlock.server._limits import check_goal, check_plan, check_values
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
from planlock.server._views import (
    approval_detail,
    approval_summary,
    event_out,
    run_detail,
    run_events,
    run_summary,
    shown,
)

__all__ = ["MAX_SEQ", "api_routes", "roles"]

MAX_SEQ = 2**63 - 1
"""The largest seq a journal can hold (SQLite's INTEGER, PostgreSQL's bigint): a larger
``after`` or ``Last-Event-ID`` is a 422, not a database error."""

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


def _served(request: Request) -> tuple[Engine, ServerConfig, Offload]:
    """The engine, config and offload of the app serving ``request`` (set by ``create_app``)."""
    state = request.app.state
    return state.engine, state.config, state.offload


@functools.cache
def api_routes() -> tuple[BaseRoute, ...]:
    """The ``/api`` routes, made at the first call and shared by every app of the process (one
    process may make many: the crash suite's restarts, the tests)."""
    router = APIRouter()

    @router.get("/api/me", **roles("submitter", "approver"))
    async def me(request: Request) -> MeOut:
        """Who the token belongs to."""
        caller = _caller(request)
        return MeOut(name=caller.name, roles=sorted(caller.roles))

    async def queue_plan(request: Request, plan: Plan, inputs: dict[str, Any]) -> SubmittedOut:
        engine, _, off = _served(request)
        submitted = await off.run(engine.submit, plan, inputs=inputs, by=_caller(request).name)
        request.state.run_id = submitted.run_id
        return SubmittedOut(
            run_id=submitted.run_id,
            status=submitted.status,
            approval_id=submitted.approval_id,
            plan_hash=plan.hash,
            plan=plan.canonical(),
        )

    @router.post("/api/runs", status_code=201, **roles("submitter", errors=(422,)))
    async def submit_plan(request: Request, body: PlanIn) -> SubmittedOut:
        """Validate and assess a plan, and queue it (for approval when a person must see it)."""
        config = _served(request)[1]
        check_plan(body.plan, config.max_steps, config.max_goal_chars)
        check_values(body.inputs, "$.inputs", config.max_input_chars)
        return await queue_plan(request, Plan.parse(body.plan), body.inputs)

    @router.post("/api/goals", status_code=201, **roles("submitter", errors=(422, 502, 503)))
    async def submit_goal(request: Request, body: GoalIn) -> SubmittedOut:
        """Plan a goal with the server's planner model, then queue the plan like a submitted one."""
        engine, config, off = _served(request)
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

    @router.get("/api/runs", **roles("submitter", "approver"))
    async def list_runs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[RunSummary]:
        """The newest runs the caller may see, newest first: a submitter their own, an approver
        also every run that asked a person for approval, an admin every run."""
        engine, _, off = _served(request)
        runs = await off.call(engine.runs, limit, _scope(_caller(request)))
        return [run_summary(r) for r in runs]

    async def find_run(request: Request, run_id: str) -> dict[str, Any]:
        engine, _, off = _served(request)
        request.state.run_id = run_id
        row = await off.call(engine.run, run_id)
        scope = _scope(_caller(request))
        if row is None or (scope is not None and not scope.holds(row)):
            request.state.run_id = None
            raise HTTPException(404, f"no run {run_id}")  # another's run: as if there were none
        return row

    @router.get("/api/runs/{run_id}", **roles("submitter", "approver", errors=(404,)))
    async def show_run(request: Request, run_id: str) -> RunDetail:
        """A run: its plan, inputs, approval requests and journal events."""
        engine, _, off = _served(request)
        row = await find_run(request, run_id)
        return run_detail(row, run_events(await off.call(engine.journal.events, run_id)))

    @router.get(
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
        engine, config, off = _served(request)
        await find_run(request, run_id)
        last = max(after, last_event_id or 0)
        return StreamingResponse(
            _sse(engine, off, run_id, last, config.sse_poll),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/api/approvals", **roles("approver"))
    async def list_approvals(request: Request) -> list[ApprovalSummary]:
        """Approval requests waiting for a person, oldest first."""
        engine, _, off = _served(request)
        return [approval_summary(a) for a in await off.call(engine.pending)]

    async def find_approval(request: Request, approval_id: str) -> dict[str, Any]:
        engine, _, off = _served(request)
        item = await off.call(engine.approval, approval_id)
        if item is None:
            raise HTTPException(404, f"no approval request {approval_id}")
        request.state.run_id = item["run_id"]
        return item

    @router.get("/api/approvals/{approval_id}", **roles("approver", errors=(404,)))
    async def show_approval(request: Request, approval_id: str) -> ApprovalDetail:
        """One request: the plan, its dependency graph, the risk report and, for a call, the
        exact arguments and their provenance."""
        item = await find_approval(request, approval_id)
        return approval_detail(item, _served(request)[0].registry)

    async def decide(
        request: Request,
        approval_id: str,
        body: DecisionIn,
        approve: bool,
        endorse: EndorseAs | None = None,
    ) -> DecisionOut:
        engine, config, off = _served(request)
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

    @router.post("/api/approvals/{approval_id}/approve", **roles("approver", errors=(404, 409)))
    async def approve(request: Request, approval_id: str, body: DecisionIn) -> DecisionOut:
        """Approve, naming the plan hash (and a call's args hash) shown with the request."""
        return await decide(request, approval_id, body, approve=True)

    @router.post("/api/approvals/{approval_id}/deny", **roles("approver", errors=(404, 409)))
    async def deny(request: Request, approval_id: str, body: DenyIn) -> DecisionOut:
        """Deny, with a reason; the run finishes as denied (for a call, the step is refused)."""
        return await decide(request, approval_id, body, approve=False)

    @router.post("/api/approvals/{approval_id}/endorse", **roles("approver", errors=(404, 409)))
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

    @router.get("/api/endorsements", **roles("approver"))
    async def list_endorsements(
        request: Request,
        include_revoked: Annotated[bool, Query(description="Also revoked and expired.")] = False,
    ) -> list[EndorsementOut]:
        """Endorsed values (saved payees, known contacts), oldest first."""
        engine, _, off = _served(request)
        return [_endorsement_out(e) for e in await off.call(engine.endorsements, include_revoked)]

    @router.post(
        "/api/endorsements/{endorsement_id}/revoke", **roles("approver", errors=(404, 409))
    )
    async def revoke(request: Request, endorsement_id: str) -> EndorsementOut:
        """Revoke an endorsement: from now on its value asks a person again (journaled)."""
        engine, _, off = _served(request)
        known = {e.id: e for e in await off.call(engine.endorsements, include_revoked=True)}
        if endorsement_id not in known:
            raise HTTPException(404, f"no endorsement {endorsement_id}")
        try:
            revoked = await off.call(engine.revoke, endorsement_id, _caller(request).name)
        except UsageError as exc:
            raise HTTPException(409, str(exc)) from None
        return _endorsement_out(revoked)

    @router.get("/api/journal/verify", **roles())
    async def verify(request: Request) -> VerifyOut:
        """Recompute the journal's hash chain."""
        engine, _, off = _served(request)
        report = await off.call(engine.journal.verify)
        return VerifyOut(
            ok=report.ok, events=report.count, first_bad=report.first_bad, reason=report.reason
        )

    return tuple(router.routes)


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
