"""Bearer tokens with roles for ``planlock serve``.

The token file (TOML or JSON) maps a person or service to its roles and its token, given either
as the SHA-256 of the token (``token_sha256``, recommended: the file then holds no secret) or
in clear (``token``, for tests and local use)::

    [users.alice]
    roles = ["approver"]
    token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

    [users.sam]
    roles = ["submitter"]
    token = "sam-secret"

Only hashes are kept in memory; a presented token is hashed and compared with every stored
hash with ``hmac.compare_digest`` (constant time, no early exit on the first match).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from planlock.errors import UsageError

__all__ = ["ROLES", "Caller", "Role", "TokenStore", "hash_token"]

Role = Literal["submitter", "approver", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token, as stored in a token file's ``token_sha256``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, as the token file names them."""

    name: str
    roles: frozenset[Role]

    def may(self, allowed: frozenset[Role]) -> bool:
        return bool(self.roles & allowed)


class TokenStore:
    """Token hashes and the callers they stand for."""

    def __init__(self, callers: Mapping[str, Caller]) -> None:
        """``callers`` maps a token's SHA-256 (hex) to its caller."""
        self._by_hash = dict(callers)

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, tuple[str, list[Role]]]) -> TokenStore:
        """From clear tokens: ``{token: (name, roles)}`` (tests, embedding)."""
        return cls(
            {hash_token(t): Caller(name, frozenset(roles)) for t, (name, roles) in tokens.items()}
        )

    @classmethod
    def load(cls, path: str | Path) -> TokenStore:
        """Read a token file (``.toml`` or ``.json``); a malformed file is a UsageError."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read token file {p}: {exc.strerror}") from None
        try:
            data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"token file {p} is not valid {p.suffix or 'TOML'}: {exc}") from None
        return cls.from_data(data, source=str(p))

    @classmethod
    def from_data(cls, data: Any, source: str = "tokens") -> TokenStore:
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict) or not users:
            raise UsageError(f"{source}: expected a [users.NAME] table with roles and a token")
        callers: dict[str, Caller] = {}
        for name, entry in users.items():
            where = f"{source}: users.{name}"
            if not isinstance(entry, dict):
                raise UsageError(f"{where}: expected a table")
            unknown = set(entry) - {"roles", "token", "token_sha256"}
            if unknown:
                raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            roles = entry.get("roles")
            if not isinstance(roles, list) or not all(r in ROLES for r in roles):
                raise UsageError(f"{where}: roles must be a list of {', '.join(ROLES)}")
            digest = _digest(entry, where)
            if digest in callers:
                raise UsageError(f"{where}: the same token as users.{callers[digest].name}")
            callers[digest] = Caller(str(name), frozenset(roles))
        return cls(callers)

    def identify(self, token: str) -> Caller | None:
        """The caller a token stands for, or None. Compares against every stored hash."""
        presented = hash_token(token).encode("ascii")
        found: Caller | None = None
        for digest, caller in self._by_hash.items():
            if hmac.compare_digest(presented, digest.encode("ascii")):
                found = caller
        return found

    def __len__(self) -> int:
        return len(self._by_hash)


def _digest(entry: dict[str, Any], where: str) -> str:
    clear, hashed = entry.get("token"), entry.get("token_sha256")
    if (clear is None) == (hashed is None):
        raise UsageError(f"{where}: give exactly one of token or token_sha256")
    if clear is not None:
        if not isinstance(clear, str) or len(clear) < 8:
            raise UsageError(f"{where}: a token must be a string of at least 8 characters")
        return hash_token(clear)
    if not isinstance(hashed, str) or len(hashed) != 64 or not _is_hex(hashed):
        raise UsageError(f"{where}: token_sha256 must be 64 hex digits")
    return hashed.lower()


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
