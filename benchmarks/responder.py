"""The independent responder: ``python -m benchmarks.responder [--cpu C]``.

The round-trip and block figures that hold the targets (and one of the two concurrency
figures) are measured against this process, not against aiotmc's
:class:`~aiotmc.sim.server.SimServer`: it shares no code with aiotmc and spends as little
CPU per query as a Python server can (a blocking ``recv``, one ``sendall``), so that a
figure measures the *client* (see docs/performance.md, "The round-trip target" and "The
block target"). The shared performance notes' reference figures were measured the same
way. A line ``:WAVeform:TEST? <n>`` is answered with the harness's test block
(``#<d><n>``, ``n`` bytes 00..FF repeating, ``\\n``: what the simulator's scope sends,
built once per size); every other line with one fixed identity line.

Prints one JSON line with its port, then serves (a thread per connection) until its
stdin closes.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading

from .figures import BLOCK_QUERY, HOST
from .procs import pin_self, serve_lines

IDENTITY = b"AIOTMC-BENCH,RESPONDER,0,1.0\n"
BLOCK_PREFIX = BLOCK_QUERY.format(size="").encode()  #: b":WAVeform:TEST? "
BLOCK_MAX = 1 << 30  #: larger sizes are answered with :data:`TOO_LARGE`
TOO_LARGE = b"ERR block too large\n"

_blocks: dict[int, bytes] = {}  # size -> whole answer; a few sizes per run


def block_answer(size: int) -> bytes:
    """The whole answer to ``:WAVeform:TEST? <size>``: header, payload, terminator."""
    answer = _blocks.get(size)
    if answer is None:
        digits = str(size).encode()
        payload = (bytes(range(256)) * (size // 256 + 1))[:size]
        answer = b"#%d%s%s\n" % (len(digits), digits, payload)
        if len(_blocks) >= 4:
            _blocks.clear()
        _blocks[size] = answer
    return answer


def answer_to(line: bytes) -> bytes:
    """The answer to one line (without its ``\\n``)."""
    if line.startswith(BLOCK_PREFIX):
        size = line[len(BLOCK_PREFIX) :].strip()
        if size.isdigit() and len(size) <= 10 and int(size) <= BLOCK_MAX:
            return block_answer(int(size))
        return TOO_LARGE
    return IDENTITY


def answer_lines(conn: socket.socket) -> None:
    """Answer every ``\\n``-terminated line on ``conn`` (:func:`answer_to`) until EOF."""
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        try:
            while data := conn.recv(65536):
                pending += data
                lines = pending.count(b"\n")
                if not lines:
                    continue
                if BLOCK_PREFIX in pending:
                    *complete, pending = pending.split(b"\n")
                    answers = [answer_to(line) for line in complete]
                    conn.sendall(answers[0] if len(answers) == 1 else b"".join(answers))
                else:  # round trips: as cheap as it gets
                    conn.sendall(IDENTITY * lines)
                    pending = pending[pending.rfind(b"\n") + 1 :]
        except OSError:  # the client went away
            return


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
