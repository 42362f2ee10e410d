"""Requests without a known token, journaled in aggregate (``http_anonymous``).

Anyone can send requests without a token, or with a wrong one, as fast as the network allows;
one hash-chained event each would let them grow the journal without bound. Instead they are
counted per client address and time window, and each window's count becomes one event: how
many requests, by status, and the first few paths (cut to ``path_chars``). Memory is bounded
too: at most ``max_clients`` addresses per window (the rest are counted under ``"*"``) and
``max_paths`` distinct paths per address (the rest are counted in ``other_paths``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from planlock.journal import Journal

__all__ = ["OVERFLOW_CLIENT", "AnonymousTally", "cut"]

OVERFLOW_CLIENT = "*"
"""The client of the requests past a window's ``max_clients`` distinct addresses."""


def cut(path: str, chars: int) -> str:
    """``path``, or its first ``chars - 1`` characters and ``…`` when it is longer."""
    return path if len(path) <= chars else path[: chars - 1] + "…"


@dataclass
class _Count:
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    other_paths: int = 0


class AnonymousTally:
    """Counts of anonymous requests per (window, client), journaled when the window ends."""

    def __init__(
        self,
        journal: Journal,
        run_id: str,
        *,
        window: float = 60.0,
        path_chars: int = 128,
        max_paths: int = 8,
        max_clients: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.window = window
        self.path_chars = path_chars
        self.max_paths = max_paths
        self.max_clients = max_clients
        self.clock = clock
        self._counts: dict[float, dict[str, _Count]] = {}
        self._lock = threading.RLock()  # the service counts and flushes in worker threads

    def window_start(self, now: float | None = None) -> float:
        at = self.clock() if now is None else now
        return math.floor(at / self.window) * self.window

    def add(self, client: str, method: str, path: str, status: int) -> None:
        """Count a request; then journal the windows that ended (a journal that cannot write
        keeps them for the next try)."""
        start = self.window_start()
        with self._lock:
            self._count(start, client, method, path, status)
            self.flush(before=start)

    def _count(self, start: float, client: str, method: str, path: str, status: int) -> None:
        clients = self._counts.setdefault(start, {})
        if client not in clients and len(clients) >= self.max_clients:
            client = OVERFLOW_CLIENT
        count = clients.setdefault(client, _Count())
        count.requests += 1
        count.statuses[str(status)] += 1
        count.methods[method[:16]] += 1
        short = cut(path, self.path_chars)
        if short in count.paths or len(count.paths) < self.max_paths:
            count.paths[short] += 1
        else:
            count.other_paths += 1

    def flush(self, before: float | None = None) -> int:
        """Journal the windows that started before ``before`` (all of them: None); how many
        events were written."""
        written = 0
        with self._lock:
            for start in sorted(self._counts):
                if before is not None and start >= before:
                    continue
                clients = self._counts[start]
                for client in sorted(clients):
                    data = self._data(start, client, clients[client])
                    self.journal.record(self.run_id, "http_anonymous", data)
                    del clients[client]  # once journaled: a failure keeps it for the next try
                    written += 1
                del self._counts[start]
        return written

    def _data(self, start: float, client: str, count: _Count) -> dict[str, Any]:
        return {
            "client": client,
            "from": _iso(start),
            "until": _iso(start + self.window),
            "requests": count.requests,
            "statuses": dict(sorted(count.statuses.items())),
            "methods": dict(sorted(count.methods.items())),
            "paths": dict(sorted(count.paths.items())),
            "other_paths": count.other_paths,
        }

    def seconds_to_next_window(self) -> float:
        now = self.clock()
        return self.window_start(now) + self.window - now


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
