"""A fork server: the modules a kind of test process needs are imported once, each process forked.

Starting a Python process that imports the MCP SDK costs about 1.7 s of CPU on a slow machine,
and one that imports planlock about 0.5 s. ``test_mcp.py`` starts its notes server some thirty
times over stdio, and ``test_docs.py`` runs each of the README's Python blocks as a process of
its own. This process imports the modules named on its command line once and listens on a Unix
socket. ``fork_launch.py`` is the command a test runs instead of ``python SCRIPT``: it hands its
stdin, stdout and stderr, its arguments and its environment to this process, which forks a child
that runs the script as ``__main__`` on those descriptors. So each start is still a process of
its own (its own pid and module state: the notes server's ``starts.log`` gets a line per start
and its ``variant`` file is read at each start), on the pipes its caller opened.

The launcher exits with the child's status. If the launcher dies first (the client terminating
the server it started), the child is killed. A test starts the fork server with the environment
its children get, so that what the preloaded modules read at import is what a fresh interpreter
would read. The README's MCP example and the HTTP tests still start the server with a new
interpreter.

Run: ``python forkserver.py SOCKET [MODULE...]``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

HEADER = struct.Struct("!Q")


def _receive(conn: socket.socket) -> tuple[list[int], dict[str, object]]:
    """The launcher's three descriptors and its request (argv, env, cwd)."""
    head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    while len(head) < HEADER.size:
        more = conn.recv(HEADER.size - len(head))
        if not more:
            raise EOFError("the launcher closed before its request")
        head += more
    (size,) = HEADER.unpack(head)
    body = b""
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise EOFError("the launcher closed in the middle of its request")
        body += more
    return fds, json.loads(body)


def _child(fds: list[int], request: dict[str, object], inherited: list[socket.socket]) -> None:
    """Runs in the forked child: becomes the server on the launcher's descriptors."""
    code = 1
    try:
        for sock in inherited:
            sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        env = request["env"]
        argv = request["argv"]
        assert isinstance(env, dict)
        assert isinstance(argv, list)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.chdir(str(request["cwd"]))
        sys.argv = [str(a) for a in argv]
        sys.path[0] = str(Path(sys.argv[0]).resolve().parent)
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the child reports and exits, whatever happened
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the pipe may be gone
                stream.flush()
        os._exit(code)


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}.new")
    listener.listen(64)
    Path(f"{path}.new").rename(path)  # the socket appears at ``path`` once it accepts connections
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("accept", None))
    conns: dict[int, tuple[socket.socket, int, int]] = {}  # pid -> (launcher, pidfd, pid)
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        for key, _ in selector.select():
            kind, pid = key.data
            if kind == "accept":
                conn, _ = listener.accept()
                try:
                    fds, request = _receive(conn)
                except (EOFError, OSError, ValueError):
                    conn.close()
                    continue
                inherited = [listener, *(c for c, _, _ in conns.values())]
                child = os.fork()
                if child == 0:  # pragma: no cover - the child becomes the server
                    conn.close()
                    _child(fds, request, inherited)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(child)
                conns[child] = (conn, pidfd, child)
                selector.register(pidfd, selectors.EVENT_READ, ("exited", child))
                selector.register(conn, selectors.EVENT_READ, ("launcher", child))
            elif pid in conns:
                conn, pidfd, child = conns.pop(pid)
                selector.unregister(pidfd)
                selector.unregister(conn)
                if kind == "launcher":  # the launcher is gone (or wrote): stop its server
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                _, status = os.waitpid(child, 0)
                os.close(pidfd)
                with contextlib.suppress(OSError):  # the launcher may be gone
                    conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()


if __name__ == "__main__":
    for module in sys.argv[2:]:  # what each start would import, imported once here
        importlib.import_module(module)
    serve(sys.argv[1])
