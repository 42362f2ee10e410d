"""Who is calling: the ``Authorization`` header read strictly, the caller's roles checked, and
failed authentications limited per client address.

A request that presents an ``Authorization`` header the server does not accept (an unknown
token, another scheme, a malformed or duplicated header) is a failed authentication. After
``auth_failures`` of them within ``auth_window`` seconds, every request from that address is
refused with 429 and ``Retry-After`` until the oldest of them leaves the window; the token is
not even looked at, so a correct guess gets the same 429 as a wrong one.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from planlock.server._auth import Caller, Role, TokenStore

__all__ = ["FailureLimiter", "client_of", "require"]

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's ``b64token``: what may follow ``Bearer``."""
_bearer = HTTPBearer(auto_error=False, description="A token from the server's token file.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_request"'}


class FailureLimiter:
    """Recent failed authentications per client address (the last ``limit`` of each, for at
    most ``max_clients`` addresses: memory stays bounded whatever the attacker sends)."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        failures = self._failures.get(client)
        if not self.limit or failures is None or len(failures) < self.limit:
            return None
        wait = failures[0] + self.window - self.clock()
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def failed(self, client: str) -> None:
        if not self.limit:
            return
        failures = self._failures.pop(client, None) or deque(maxlen=self.limit)
        failures.append(self.clock())
        self._failures[client] = failures  # most recent last
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)


def client_of(request: Request) -> str:
    """The client's address as the server sees it: the socket's peer, or under ``planlock
    serve --forwarded-allow-ips`` the address a listed proxy gives in ``X-Forwarded-For`` (by
    default no proxy is trusted, not even on 127.0.0.1)."""
    return (request.client.host if request.client else "?")[:64]


def _token(request: Request) -> str | None:
    """The bearer token, None without an ``Authorization`` header; a header that is present but
    not exactly one ``Bearer <b64token>`` is an HTTPException (401 or 400)."""
    values = request.headers.getlist("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise HTTPException(400, "more than one Authorization header", _INVALID)
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", _CHALLENGE)
    if not _TOKEN68.fullmatch(token):
        raise HTTPException(
            400,
            "malformed Authorization header: expected 'Bearer <token>', the token one word of "
            "ASCII letters, digits and -._~+/",
            _INVALID,
        )
    return token


def require(allowed: frozenset[Role]) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold one of ``allowed`` (401, 400, 403 or 429)."""

    async def dependency(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Caller:
        limiter: FailureLimiter = request.app.state.limiter
        client = client_of(request)
        wait = limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many failed authentications from {client}: try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        try:
            token = _token(request)
        except HTTPException:
            limiter.failed(client)
            raise
        if token is None:
            raise HTTPException(401, "missing bearer token", _CHALLENGE)
        tokens: TokenStore = request.app.state.tokens
        caller = tokens.identify(token)
        if caller is None:
            limiter.failed(client)
            raise HTTPException(401, "unknown bearer token", _CHALLENGE)
        request.state.caller = caller
        if not caller.may(allowed):
            have = ", ".join(sorted(caller.roles)) or "no role"
            need = " or ".join(sorted(allowed))
            raise HTTPException(403, f"{caller.name} has {have}; this needs {need}")
        return caller

    return dependency
