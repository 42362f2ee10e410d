"""``planlock serve``: the HTTP approval service and its web page (extra ``planlock[server]``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from planlock.cli._app import (
    EXIT_INVALID,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    JournalOpt,
    PolicyOpt,
    ToolsOpt,
    _fail,
    _model,
    _open_journal,
    _policy,
    _registry,
    app,
    err,
)
from planlock.errors import DatabaseUnavailable, UsageError
from planlock.queue import Lease, parse_duration

if TYPE_CHECKING:
    from planlock.llm import LLM
    from planlock.policy import Policy
    from planlock.server._durable import DurableEngine


@app.command("serve")
def serve_cmd(
    tools: ToolsOpt,
    tokens: Annotated[
        Path,
        typer.Option(
            "--tokens", help="Token file (TOML or JSON): [users.NAME] roles and token_sha256."
        ),
    ],
    journal: JournalOpt = None,
    policy: PolicyOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Workers executing approved runs in the server (0: use `planlock worker`).",
            min=0,
        ),
    ] = 1,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Planner model for submitted goals, and for the plans' llm steps "
            "(local, openai:MODEL[@URL], anthropic:MODEL) [default: goals are refused].",
        ),
    ] = None,
    allow_self_approval: Annotated[
        bool,
        typer.Option(
            "--allow-self-approval",
            help="Let an approver approve a run they submitted (default: refused).",
        ),
    ] = False,
    db_threads: Annotated[
        int,
        typer.Option(help="Threads for the requests' database work (off the event loop).", min=1),
    ] = 16,
    db_wait: Annotated[
        float,
        typer.Option(
            help="PostgreSQL: seconds a request waits for a database that went away before it "
            "is answered 503 with Retry-After.",
            min=0,
        ),
    ] = 5.0,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            help="Largest request body in bytes, refused with 413 while it is read.",
            envvar="PLANLOCK_MAX_BODY_BYTES",
            min=1,
        ),
    ] = 1024 * 1024,
    max_steps: Annotated[
        int,
        typer.Option(
            help="Most steps in a submitted plan (422 before validation).",
            envvar="PLANLOCK_MAX_STEPS",
            min=1,
        ),
    ] = 1000,
    max_goal_chars: Annotated[
        int,
        typer.Option(
            help="Longest goal in characters (422).", envvar="PLANLOCK_MAX_GOAL_CHARS", min=1
        ),
    ] = 8000,
    max_input_chars: Annotated[
        int,
        typer.Option(
            help="Longest string anywhere in inputs or context (422).",
            envvar="PLANLOCK_MAX_INPUT_CHARS",
            min=1,
        ),
    ] = 32768,
    auth_failures: Annotated[
        int,
        typer.Option(
            help="Failed authentications per client address and --auth-window before "
            "its requests get 429 (0: no limit).",
            envvar="PLANLOCK_AUTH_FAILURES",
            min=0,
        ),
    ] = 10,
    auth_window: Annotated[
        float,
        typer.Option(
            help="Seconds of the failed-authentication window.",
            envvar="PLANLOCK_AUTH_WINDOW",
            min=1,
        ),
    ] = 60.0,
    anonymous_window: Annotated[
        float,
        typer.Option(
            help="Seconds per http_anonymous event: requests without a known token are "
            "journaled as counts per client and window.",
            envvar="PLANLOCK_ANONYMOUS_WINDOW",
            min=1,
        ),
    ] = 60.0,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            help="Addresses of reverse proxies whose X-Forwarded-For names the client "
            "(comma-separated; '*' for any). Empty (the default): the client is the socket's "
            "peer, so no local process can pass for another address (the failed-"
            "authentication limit and http_anonymous count per client).",
            envvar="PLANLOCK_FORWARDED_ALLOW_IPS",
        ),
    ] = "",
    lease: Annotated[
        str,
        typer.Option(
            help="The in-server workers' lease on a run: after this long without a heartbeat "
            "any worker recovers it (90s, 2m)."
        ),
    ] = "30s",
    heartbeat: Annotated[
        str, typer.Option(help="How often an in-server worker renews its run's lease.")
    ] = "10s",
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="queue (the approval queue) or dbos (durable runs: docs/durable.md).",
        ),
    ] = "queue",
    db: Annotated[
        str | None,
        typer.Option(help="With --engine dbos: the DBOS system database (as for the worker)."),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="This server's id: its worker N is ID:http-N, and a server restarted with the "
            "same id takes its own unfinished runs back at once; no two live servers may share "
            "one (with --engine dbos: the in-server DBOS worker's id) "
            "[default: HOST:ADDRESS:PORT; dbos: HOST-serve].",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and the approval page (bearer tokens with roles)."""
    try:
        import uvicorn  # noqa: F401, PLC0415  (the server extra; run_server uses it)

        from planlock.server import QueueEngine, ServerConfig, TokenStore, create_app  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:
        _fail(
            EXIT_USAGE,
            f"planlock serve needs the server extra: pip install 'planlock[server]' ({exc})",
        )
    registry = _registry(tools)
    rules = _policy(policy, registry)
    try:
        store = TokenStore.load(tokens)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    try:
        held = Lease(parse_duration(lease), parse_duration(heartbeat))
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    llm = _model(model) if model else None
    if engine_name not in ("queue", "dbos"):
        _fail(EXIT_USAGE, f"unknown engine {engine_name!r} (use queue or dbos)")
    config = ServerConfig(
        allow_self_approval=allow_self_approval,
        planner=llm,
        workers=workers,
        db_threads=db_threads,
        db_wait=db_wait,
        max_body_bytes=max_body_bytes,
        max_steps=max_steps,
        max_goal_chars=max_goal_chars,
        max_input_chars=max_input_chars,
        auth_failures=auth_failures,
        auth_window=auth_window,
        anonymous_window=anonymous_window,
    )
    with _listen(host, port) as listener:  # before any worker starts: the port is this server's
        bound = int(listener.getsockname()[1])  # --port 0: the port the system chose
        engine = (
            durable_engine(tools, journal, rules, llm, db, worker_id, held)
            if engine_name == "dbos"
            else QueueEngine(
                _open_journal(journal),
                registry,
                policy=rules,
                tools_spec=tools,
                llm=llm,
                lease=held,
                server_id=worker_id or default_server_id(listener),
            )
        )
        try:
            if engine_name == "dbos" and workers:  # refused before it listens, not after
                from planlock.cli._durable import join_waiting, starting  # noqa: PLC0415

                durable = cast("DurableEngine", engine)
                with starting("planlock serve", db_wait):
                    join_waiting(lambda: durable.join(workers), db_wait)
            api = create_app(engine, store, config)
            shown = f"[{host}]" if ":" in host else host
            err.print(
                f"planlock serve: http://{shown}:{bound}/ ({len(store)} token(s), "
                f"{workers} worker(s))",
                highlight=False,
            )
            proxies = forwarded_allow_ips.strip()
            run_server(
                api,
                fd=listener.fileno(),
                log_level="warning",
                lifespan="on",
                # uvicorn's default trusts X-Forwarded-For from 127.0.0.1: a local process could
                # then rotate fake addresses past the per-client limits.
                proxy_headers=bool(proxies),
                forwarded_allow_ips=proxies or None,
            )
        finally:
            engine.close()
    failure = getattr(api.state, "worker_failure", None)
    if failure is not None:
        code = EXIT_UNAVAILABLE if isinstance(failure, DatabaseUnavailable) else EXIT_INVALID
        _fail(
            code,
            f"the server's workers stopped ({type(failure).__name__}: {failure}), and so did "
            f"the server (exit {code}), for a supervisor to restart it",
        )


def run_server(api: Any, **options: Any) -> None:
    """``uvicorn.run(api, **options)``, and ``api.state.stop`` to stop it from inside (the app
    calls it when its workers fail)."""
    import uvicorn  # noqa: PLC0415  (optional extra)

    server = uvicorn.Server(uvicorn.Config(api, **options))
    api.state.stop = lambda: setattr(server, "should_exit", True)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: the app did not start


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now. The workers start only once the app does,
    after this: a second server started on a port already served fails here, before any of its
    workers could take the first one's runs as its own (``default_server_id``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
        sock.listen(2048)  # listening: with SO_REUSEADDR a mere bind would not hold the port
    except OSError as exc:
        sock.close()
        _fail(1, f"cannot listen on {host}:{port}: {exc.strerror}")  # uvicorn's exit code for it
    return sock


def default_server_id(listener: socket.socket) -> str:
    """``HOST:ADDRESS:PORT`` of the bound socket: the same at every start of a server on the
    same address and port, and no other live server on this host can have it (the system lets
    one socket listen on an address and port; the wildcard address conflicts with every one)."""
    address, port = listener.getsockname()[:2]
    shown = f"[{address}]" if ":" in address else address
    return f"{socket.gethostname()}:{shown}:{port}"


def durable_engine(
    tools: str,
    journal: str | None,
    rules: Policy,
    llm: LLM | None,
    db: str | None,
    worker_id: str | None,
    held: Lease,
) -> DurableEngine:
    """``--engine dbos``: the durable engine, with an in-server DBOS worker (its liveness lease
    is ``--lease``/``--heartbeat``; ``--model`` also replans its runs)."""
    try:
        from planlock.cli._durable import db_url  # noqa: PLC0415  (optional dependency)
        from planlock.durable import WorkerContext  # noqa: PLC0415
        from planlock.planning import Replanner  # noqa: PLC0415
        from planlock.server._durable import DurableEngine  # noqa: PLC0415
    except ImportError:
        _fail(EXIT_USAGE, "--engine dbos needs the 'durable' extra: pip install planlock[durable]")
    registry = _registry(tools)
    j = _open_journal(journal)
    replanner = Replanner(llm, registry, journal=j) if llm else None
    return DurableEngine(
        j,
        registry,
        db_url=db_url(db, journal),
        policy=rules,
        context=WorkerContext(registry, j, llm=llm, replanner=replanner),
        worker_id=worker_id or f"{socket.gethostname()}-serve",
        worker_options={"lease": held.duration, "heartbeat": held.renew},
    )
