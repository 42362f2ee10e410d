"""Shared setup for the server tests: tokens, an app over a fresh journal, a free port."""

from __future__ import annotations

import functools
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from planlock import Journal, ToolRegistry
from planlock.server._app import ServerConfig, create_app
from planlock.server._auth import Role, TokenStore
from planlock.server._engine import QueueEngine

TOKENS: dict[str, tuple[str, list[Role]]] = {
    "sam-token-0001": ("sam", ["submitter"]),
    "alice-token-01": ("alice", ["approver"]),
    "root-token-001": ("root", ["admin"]),
    "pat-token-0001": ("pat", ["submitter", "approver"]),
    "nobody-token-1": ("nobody", []),
    "eve-token-0001": ("eve", ["submitter"]),
}
TOKEN_OF = {name: token for token, (name, _) in TOKENS.items()}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN_OF[name]}"}


def make_app(
    db: Path, registry: ToolRegistry, config: ServerConfig | None = None
) -> tuple[Any, QueueEngine]:
    engine = QueueEngine(Journal.open(db), registry, poll=0.02)
    config = config or ServerConfig(workers=1, sse_poll=0.02)
    return create_app(engine, TokenStore.from_tokens(TOKENS), config), engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for this test process's HTTP clients (``verify=tls()``): httpx makes one
    for every client or module-level call it is not given one for, loading the CA bundle each
    time (~50 ms of CPU), and the tests poll servers with such calls. The servers are http://."""
    return httpx.create_ssl_context()


def wait_for(check: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(every)


TOKENS_TOML = "\n".join(
    f'[users.{name}]\nroles = {roles!r}\ntoken = "{token}"\n'.replace("'", '"')
    for token, (name, roles) in TOKENS.items()
)


@contextmanager
def serve(
    tmp_path: Path,
    *extra: str,
    tools: str = "planlock.demo:registry",
    journal: str | Path | None = None,
) -> Iterator[Server]:
    """``planlock serve`` in a subprocess on a free loopback port; stopped on exit. The journal
    is ``journal`` (a DSN, say), else a fresh SQLite file."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_TOML, encoding="utf-8")
    db = journal if journal is not None else tmp_path / "serve.db"
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from planlock.cli._main import main; main()",
        "serve",
        "--tools",
        tools,
        "--tokens",
        str(tokens),
        "--journal",
        str(db),
        "--port",
        str(port),
        *extra,
    ]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text())
            try:
                url = f"{base}/api/openapi.json"
                return httpx.get(url, timeout=1, verify=tls()).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, every=0.1)
        yield Server(base, db, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass(frozen=True)
class Server:
    url: str
    db: str | Path
    proc: subprocess.Popen[bytes]
