"""A client process: ``python -m benchmarks.worker <client> [--cpu N]``.

Speaks JSON lines: first ``{"ready": ...}``, then one answer per request
``{"kind": ..., "params": {...}}``: ``{"ok": true, "metrics": {...}, "notes": [...]}``,
``{"ok": false, "na": reason}`` or ``{"ok": false, "error": text}``. Exits on EOF.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import traceback
from typing import Any, Protocol

from .common import NotAvailable, Result
from .procs import pin_self, raise_fd_limit, serve_lines


class Client(Protocol):
    """What the worker drives."""

    def versions(self) -> dict[str, str]: ...

    def run(self, kind: str, params: dict[str, Any]) -> Result: ...


def make_client(name: str) -> Client:
    """Import and build the client called ``name``."""
    if name == "aiotmc-sync":
        from .client_sync import SyncClient

        return SyncClient(name)
    if name.startswith("aiotmc-"):
        from .client_aiotmc import AiotmcClient

        return AiotmcClient(name)
    if name.startswith("pyvisa"):
        from .client_pyvisa import PyvisaClient

        return PyvisaClient(name)
    if name == "floor":
        from .client_floor import FloorClient

        return FloorClient()
    raise ValueError(f"unknown client {name!r}")


def handle(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    """Run one request; never raises (errors are reported in the answer)."""
    try:
        out = client.run(request["kind"], request["params"])
    except NotAvailable as exc:
        return {"ok": False, "na": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        gc.collect()
    return {"ok": True, **out}


def main(argv: list[str] | None = None) -> int:
    """Serve trials until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("client")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    raise_fd_limit()
    requests, responses = serve_lines()
    try:
        client = make_client(args.client)  # imports run unpinned, in parallel with others
    except NotAvailable as exc:
        responses.write(json.dumps({"ready": False, "na": str(exc)}) + "\n")
        return 0
    except Exception as exc:
        traceback.print_exc()
        responses.write(json.dumps({"ready": False, "na": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 0
    pinned = pin_self(args.cpu)
    hello = {
        "ready": True,
        "client": args.client,
        "pinned": pinned,
        "python": platform.python_version(),
        "versions": client.versions(),
    }
    responses.write(json.dumps(hello) + "\n")
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        responses.write(json.dumps(handle(client, request)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
