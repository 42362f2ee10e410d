"""Run ``SCRIPT ARGS`` in a process forked by ``forkserver.py``, as ``python SCRIPT ARGS`` would.

Run: ``python -I -S fork_launch.py SOCKET SCRIPT [ARGS...]``. It hands its stdin, stdout and
stderr, ``SCRIPT ARGS`` and its environment to the fork server, waits until the process it forked
exits and exits with its status (a negative status, killed by a signal, as 128 + the signal).
Standard library only, so that ``-I -S`` starts it in a few milliseconds.
"""

import json
import os
import socket
import struct
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
cwd = os.getcwd()  # noqa: PTH109  (no pathlib: it would slow the start)
request = json.dumps({"argv": sys.argv[2:], "env": dict(os.environ), "cwd": cwd}).encode()
socket.send_fds(sock, [struct.pack("!Q", len(request))], [0, 1, 2])
sock.sendall(request)
status = b""
while chunk := sock.recv(64):
    status += chunk
code = int(status) if status else 1
os._exit(code if code >= 0 else 128 - code)
