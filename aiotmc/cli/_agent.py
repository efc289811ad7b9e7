"""``aiotmc agent``: serve this host's instruments to other hosts through a NATS server."""

from __future__ import annotations

import argparse
import os
import ssl
import sys

from ..resources import NatsInstr
from ._errors import CommandError, UsageError
from ._runtime import Options, run_async
from ._sim import _termination_signals

__all__ = ["cmd_agent", "parse_instrument"]


def parse_instrument(text: str) -> tuple[str, str]:
    """``NAME=RESOURCE`` (argparse type)."""
    name, sep, resource = text.partition("=")
    if not sep or not name or not resource:
        raise argparse.ArgumentTypeError(f"expected NAME=RESOURCE, got {text!r}")
    return name, resource


def cmd_agent(args: argparse.Namespace, options: Options) -> int:
    from ..agent import Agent, AgentInstrument
    from ..transports.nats import NatsServer

    urls = []
    for item in args.nats.split(","):
        try:
            urls.append(NatsInstr.from_url(f"{item.strip().rstrip('/')}/{args.name}/x"))
        except ValueError as exc:
            raise UsageError(f"--nats: {exc}") from None
    url = urls[0]
    password = None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            raise CommandError(f"cannot read the password file: {exc}") from None
    tls = None
    if args.tls_ca:
        try:
            tls = ssl.create_default_context(cafile=args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(f"cannot load the CA file: {exc}") from None
    servers = [
        NatsServer(
            u.host,
            u.port,
            user=args.user,
            password=password,
            token=os.environ.get("AIOTMC_NATS_TOKEN"),
            tls=tls,
        )
        for u in urls
    ]
    instruments = [AgentInstrument(name, resource) for name, resource in args.instrument]
    agent = Agent(servers, args.name, instruments, heartbeat=args.heartbeat)

    async def run() -> None:
        import anyio

        with _termination_signals() as terminated:
            async with anyio.create_task_group() as tg:
                await tg.start(agent.run)
                for item in instruments:
                    remote = NatsInstr(
                        host=url.host, port=url.port, agent=args.name, instrument=item.name
                    )
                    print(f"{remote}  {item.resource}", flush=True)
                print(
                    f"aiotmc: agent {args.name} serving {len(instruments)} instrument(s); "
                    "Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
                await terminated()
                tg.cancel_scope.cancel()
        print("aiotmc: agent stopped", file=sys.stderr)

    run_async(options, run)
    return 0
