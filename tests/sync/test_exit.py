"""Instruments left open are closed at interpreter exit, before the loop thread stops."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import atexit, socket, threading

    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()

    def serve():
        conn, _ = listener.accept()
        while True:
            data = conn.recv(100)
            if not data:
                closed.set()  # the client closed its end
                return
            if data.endswith(b"*IDN?\\n"):
                conn.sendall(b"left,open\\n")

    threading.Thread(target=serve, daemon=True).start()
    # registered first, so it runs after aiotmc.sync's own exit handler
    atexit.register(lambda: print("closed at exit:", closed.wait(10)))

    import aiotmc.sync

    inst = aiotmc.sync.open(f"TCPIP::127.0.0.1::{listener.getsockname()[1]}::SOCKET")
    print(inst.query("*IDN?"))
    """
)


def test_open_instruments_are_closed_at_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["left,open", "closed at exit: True"]
