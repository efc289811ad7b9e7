"""Ctrl-C in the calling thread cancels the operation in the loop thread (the link's
recovery runs) and nothing keeps running: checked in a subprocess that sends itself
SIGINT at the moment the server has received the query (no sleeps)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, signal, socket, threading
    import aiotmc.sync

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    main = threading.main_thread().ident

    def serve():
        for n in (1, 2):  # the first connection is left stale by the interrupt
            conn, _ = listener.accept()
            data = b""
            while not data.endswith(b"*IDN?\\n"):
                chunk = conn.recv(100)
                if not chunk:
                    return
                data += chunk
            if n == 1:
                signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C while the query waits
                kept.append(conn)
            else:
                conn.sendall(b"fresh,2\\n")
                conn.recv(100)  # until the client closes

    kept = []
    threading.Thread(target=serve, daemon=True).start()
    result = {}
    with aiotmc.sync.open(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=20) as inst:
        try:
            inst.query("*IDN?", timeout=None)
        except KeyboardInterrupt:
            result["interrupted"] = True
        result["locked_after"] = inst.instrument._lock.locked()
        result["answer"] = inst.query("*IDN?")
        result["reconnects"] = inst.transport.reconnects
    print(json.dumps(result))
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_cancels_the_call_and_the_link_recovers(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={"AIOTMC_SYNC_BACKEND": backend, "PATH": "", "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "interrupted": True,
        "locked_after": False,  # the operation ended before KeyboardInterrupt propagated
        "answer": "fresh,2",  # the stale answer was discarded with the old connection
        "reconnects": 1,
    }
