"""The independent responder: ``python -m benchmarks.responder [--cpu C]``.

The round-trip figures that hold the 1.3x target are measured against this process, not
against aiotmc's :class:`~aiotmc.sim.server.SimServer`: it shares no code with aiotmc and
spends as little CPU per query as a Python server can (a blocking ``recv``, one
``sendall``), so that a round trip measures the *client* (see docs/performance.md, "The
round-trip target"). The shared performance notes' reference figures were measured the
same way. Every line it receives is answered with one fixed identity line.

Prints one JSON line with its port, then serves (a thread per connection) until its
stdin closes.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading

from .figures import HOST
from .procs import pin_self, serve_lines

IDENTITY = b"AIOTMC-BENCH,RESPONDER,0,1.0\n"


def answer_lines(conn: socket.socket) -> None:
    """Answer every ``\\n``-terminated line on ``conn`` with :data:`IDENTITY` until EOF."""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            pending += data
            lines = pending.count(b"\n")
            if lines:
                conn.sendall(IDENTITY * lines)
                pending = pending[pending.rfind(b"\n") + 1 :]


def accept_forever(listener: socket.socket) -> None:
    """Serve each connection in a daemon thread of its own."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed at exit
            return
        threading.Thread(target=answer_lines, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.responder")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    pinned = pin_self(args.cpu)
    requests, responses = serve_lines()
    listener = socket.create_server((HOST, 0))
    threading.Thread(target=accept_forever, args=(listener,), daemon=True).start()
    responses.write(json.dumps({"port": listener.getsockname()[1], "pinned": pinned}) + "\n")
    requests.read()  # until the parent closes our stdin (or dies)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
