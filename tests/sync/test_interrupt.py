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
    import contextlib, json, signal, socket, sys, threading
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
        held = inst.lock() if sys.argv[1] == "locked" else contextlib.nullcontext()
        with held:
            try:
                inst.query("*IDN?", timeout=None)
            except KeyboardInterrupt:
                result["interrupted"] = True
            # plain: the cancelled query has ended and released the lock; locked: the
            # session still holds it
            result["held_after_interrupt"] = inst.instrument._lock.locked()
            result["answer"] = inst.query("*IDN?")  # in the same lock session, if any
        result["locked_after"] = inst.instrument._lock.locked()
        result["reconnects"] = inst.transport.reconnects
    print(json.dumps(result))
    """
)


@pytest.mark.parametrize("mode", ["plain", "locked"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_cancels_the_call_and_the_link_recovers(backend: str, mode: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={"AIOTMC_SYNC_BACKEND": backend, "PATH": "", "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "interrupted": True,
        "held_after_interrupt": mode == "locked",
        "locked_after": False,  # nothing holds the instrument: the operation has ended
        "answer": "fresh,2",  # the stale answer was discarded with the old connection
        "reconnects": 1,
    }


def test_an_interrupt_landing_after_the_call_ended_does_not_wait(sync_backend: str) -> None:
    """Ctrl-C handled just after ``Call.result`` got the call's end (the signal is raised at
    the next bytecode): cancelling finds the call ended and returns at once, instead of
    waiting CANCEL_GRACE for an end that was already taken (seen as a 30 s hang)."""
    import time

    from aiotmc.sync._portal import CANCEL_GRACE, Call, portal_for

    async def answer() -> int:
        return 42

    call = Call(portal_for(sync_backend), answer())
    call.submit()
    assert call.finished.acquire(timeout=10)  # what result() did before the interrupt
    started = time.monotonic()
    call.cancel_and_wait()  # what result() does on the interrupt
    assert time.monotonic() - started < CANCEL_GRACE / 3
    assert call.done and not call.cancelled
