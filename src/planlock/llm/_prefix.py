"""The embedded model's prompt-prefix cache, kept on disk across processes.

Every plan over one registry starts with the same system message: the planner's instructions
and the tool list, thousands of tokens that a fresh process would read again (tens of seconds
on 2 cores). After a call whose prefix is not cached, llama.cpp's state for that call (the KV
cache of its tokens) is saved under ``$PLANLOCK_CACHE/prefix``; a new process restores it before
its first call with the same prefix and reads only the tokens after it.

An entry is keyed by a SHA-256 of the model's identity (its pinned hash, or path, size and
modification time), the runtime's version and the prefix's exact text, so a change of model,
prompt or registry (which is rendered into the prompt) is a different key: a miss, never a
stale hit. llama.cpp itself compares the restored tokens with the new prompt's and reuses only
their common part, so a restored entry can make a call faster, never different in kind.
Entries are written under a temporary name and renamed into place; a file that fails to
restore is deleted; the least recently used entries beyond ``max_entries`` are removed.

``$PLANLOCK_PREFIX_CACHE=off`` turns it off; a path there puts it elsewhere. The files are as
trusted as the model file beside them: anyone who can write them can change the planner's
behaviour, so keep the cache directory private to the user.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["PrefixCache", "PrefixStatus", "SlotStore", "prefix_cache_from_env"]

PrefixStatus = Literal["off", "short", "held", "restored", "miss", "failed"]
"""What the cache did for one call: ``off`` (no cache), ``short`` (prefix too short to be
worth it), ``held`` (the model already holds the prefix from an earlier call in this process),
``restored`` (read from disk), ``miss`` (not on disk: saved after the call), ``failed`` (an entry
was there but would not restore; it was deleted)."""

_PREFIX = "prefix-"
_SUFFIX = ".bin"


class SlotStore(Protocol):
    """Saves and restores the model's state to and from a file in the cache directory."""

    def save(self, filename: str) -> None: ...

    def restore(self, filename: str) -> int:
        """Restore ``filename``; the number of tokens restored. Raises on failure."""
        ...


@dataclass
class PrefixCache:
    """Decides, per call, whether to restore the prefix before it and to save it after."""

    directory: Path
    identity: str
    """The model and runtime: part of every key."""
    max_entries: int = 8
    min_chars: int = 2000
    """Shorter prefixes are read faster than a restore pays for: not cached."""
    _held: str | None = field(default=None, repr=False)

    def key(self, prefix: str) -> str:
        digest = hashlib.sha256()
        for part in (self.identity, prefix):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.hexdigest()

    def filename(self, key: str) -> str:
        return f"{_PREFIX}{key[:40]}{_SUFFIX}"

    def before(self, slots: SlotStore, prefix: str | None) -> PrefixStatus:
        """Called before a call whose prompt starts with ``prefix``: restore it if on disk."""
        if prefix is None or len(prefix) < self.min_chars:
            self._held = None  # the call will replace whatever the model held
            return "short"
        key = self.key(prefix)
        if key == self._held:
            return "held"
        self._held = None
        path = self.directory / self.filename(key)
        if not path.is_file():
            return "miss"
        try:
            slots.restore(path.name)
        except Exception:  # corrupt, truncated, or from an incompatible runtime
            path.unlink(missing_ok=True)
            return "failed"
        os.utime(path)  # least recently used goes first
        self._held = key
        return "restored"

    def after(self, slots: SlotStore, prefix: str | None, status: PrefixStatus) -> None:
        """Called after a call that finished: save the prefix if it was not on disk."""
        if prefix is None or status in ("off", "short"):
            return
        key = self.key(prefix)
        self._held = key
        if status not in ("miss", "failed"):
            return
        final = self.directory / self.filename(key)
        tmp = f"tmp-{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        try:
            slots.save(tmp)
            (self.directory / tmp).replace(final)
        except Exception:  # a full disk or a refused save costs the cache, never the call
            (self.directory / tmp).unlink(missing_ok=True)
            return
        self.prune()

    def forget(self) -> None:
        """The model's state is unknown (a call failed or was abandoned)."""
        self._held = None

    def prune(self) -> None:
        entries = sorted(
            self.directory.glob(f"{_PREFIX}*{_SUFFIX}"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for stale in entries[self.max_entries :]:
            stale.unlink(missing_ok=True)


def prefix_cache_from_env(
    default_dir: Callable[[], Path], identity: str, *, setting: bool | Path | None = None
) -> PrefixCache | None:
    """The cache the settings ask for: ``setting`` (False: off, a path: there), else
    ``$PLANLOCK_PREFIX_CACHE`` (``off``/``0``/``false``: off; a path: there), else on, in
    ``default_dir() / "prefix"``."""
    if setting is False:
        return None
    if isinstance(setting, Path):
        directory = setting
    else:
        env = os.environ.get("PLANLOCK_PREFIX_CACHE", "").strip()
        if env.lower() in ("off", "0", "false", "no"):
            return None
        directory = Path(env).expanduser() if env else default_dir() / "prefix"
    directory.mkdir(parents=True, exist_ok=True)
    return PrefixCache(directory, identity)
