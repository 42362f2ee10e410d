"""The service's limits: the body size (an ASGI middleware that counts bytes as they arrive),
and the sizes of what a body holds (steps, goal, input values, nesting), checked before a plan
is parsed, validated or journaled."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from fastapi.responses import JSONResponse

__all__ = [
    "MAX_DEPTH",
    "BodyLimit",
    "LimitExceeded",
    "check_goal",
    "check_plan",
    "check_values",
    "json_problem",
]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays in a plan, its inputs or a goal's context."""


class LimitExceeded(Exception):
    """A request over one of the server's limits (answered 422 with ``issues``)."""

    def __init__(self, issues: list[dict[str, str]]) -> None:
        super().__init__(issues[0]["message"])
        self.issues = issues


def _issue(path: str, message: str) -> LimitExceeded:
    return LimitExceeded([{"code": "too_large", "path": path, "message": message}])


def check_plan(plan: dict[str, Any] | list[Any], max_steps: int, max_goal_chars: int) -> None:
    """Refuse a plan with more than ``max_steps`` steps or a goal over ``max_goal_chars``."""
    steps = plan if isinstance(plan, list) else plan.get("steps")
    if isinstance(steps, list) and len(steps) > max_steps:
        raise _issue(
            "$.plan" if isinstance(plan, list) else "$.plan.steps",
            f"the plan has {len(steps):,} steps; this server accepts at most {max_steps:,} "
            "(--max-steps)",
        )
    goal = plan.get("goal") if isinstance(plan, dict) else None
    if isinstance(goal, str):
        check_goal(goal, max_goal_chars, "$.plan.goal")


def check_goal(goal: str, max_chars: int, where: str = "$.goal") -> None:
    if len(goal) > max_chars:
        raise _issue(
            where,
            f"the goal is {len(goal):,} characters; this server accepts at most {max_chars:,} "
            "(--max-goal-chars)",
        )


def check_values(value: Any, where: str, max_chars: int) -> None:
    """Refuse a string (value or key) longer than ``max_chars`` anywhere in ``value``."""
    for path, text in _strings(value, where):
        if len(text) > max_chars:
            raise _issue(
                path,
                f"{path} is {len(text):,} characters; this server accepts at most "
                f"{max_chars:,} in an input value (--max-input-chars)",
            )


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, inner in item.items():
                yield f"{path} (a key)", str(key)
                stack.append((inner, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(item))


def json_problem(value: Any, where: str) -> str | None:
    """What makes ``value`` unfit to hash and journal, or None: a ``NaN`` or an infinity
    (Python's JSON parser accepts them, JSON does not), a lone surrogate (``"\\ud800"``: no
    UTF-8 can encode it), or nesting deeper than ``MAX_DEPTH``. Iterative: no depth of input
    can exhaust the stack here."""
    stack = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where} is nested deeper than {MAX_DEPTH} levels (at {path})"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path} is {item}: not a JSON number"
        if isinstance(item, str) and not _encodable(item):
            return f"{path} holds a lone surrogate: not encodable text"
        if isinstance(item, dict):
            for key, inner in item.items():
                if not _encodable(str(key)):
                    return f"{path} has a key with a lone surrogate: not encodable text"
                stack.append((inner, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, f"{path}[{i}]", depth + 1) for i, inner in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class BodyLimit:
    """ASGI middleware: refuse (413) a body over ``max_bytes`` while it is read.

    A ``Content-Length`` over the limit is refused before a byte of the body is read; a body
    without one (chunked) is counted as it arrives and refused as soon as it passes the limit.
    Either way at most ``max_bytes`` (plus one chunk) is ever held. A body within the limit is
    handed to the app whole, as one message."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
        if len(declared) > 1 or (declared and not declared[0].strip().isdigit()):
            await _refuse(scope, receive, send, 400, "malformed Content-Length header")
            return
        if declared and int(declared[0]) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        first: dict[str, Any] | None = None
        while first is None:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: pass that on
                first = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()  # after the body: the disconnect a stream listens for

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        limit = self.max_bytes
        message = f"the request body is over this server's limit of {limit:,} bytes"
        await _refuse(scope, receive, send, 413, message + " (--max-body-bytes)")


async def _refuse(scope: Any, receive: Any, send: Any, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
