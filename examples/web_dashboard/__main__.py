"""Serve the dashboard: ``python -m examples.web_dashboard`` (or ``python examples/web_dashboard``).

By default it serves http://127.0.0.1:8000/ against simulated instruments. Real ones:
``--resource dmm=TCPIP0::192.168.1.20::5025::SOCKET --resource psu=USB0::...::INSTR``.
``--port 0`` picks a free port; the first line printed is always the URL to open.
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
from pathlib import Path
from typing import Any


def _create_app() -> Any:
    if not __package__:  # run as a directory: make the repository root importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    return importlib.import_module("examples.web_dashboard.app").create_app


def _resource(text: str) -> tuple[str, str]:
    name, sep, resource = text.partition("=")
    if not sep or not name or not resource:
        raise argparse.ArgumentTypeError(f"expected NAME=RESOURCE, got {text!r}")
    return name, resource


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.web_dashboard", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: pick a free one)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients use besides localhost/127.0.0.1/::1 (repeat)",
    )
    parser.add_argument(
        "--resource",
        type=_resource,
        action="append",
        metavar="NAME=RESOURCE",
        help="an instrument to show (repeat); default: simulated dmm, psu and scope",
    )
    parser.add_argument("--period", type=float, default=0.2, help="seconds between readings")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)

    import uvicorn  # runs on asyncio; the app itself is backend-neutral (anyio)

    resources = dict(args.resource) if args.resource else None
    hosts = ["localhost", "127.0.0.1", "::1", *args.allow_host]
    if args.host not in ("0.0.0.0", "::"):
        hosts.append(args.host)
    app = _create_app()(resources, period=args.period, allowed_hosts=hosts)

    # Bind first, so that the printed URL (port 0 included) is already accepting
    # connections: they wait in the backlog until the lifespan has opened the instruments.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"aiotmc web dashboard: http://{shown}:{port}/", flush=True)

    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down gracefully, then re-raised it
        pass


if __name__ == "__main__":
    main()
