"""``aiotmc gateway CONFIG.toml``, ``--demo`` and ``--check``: the IoT gateway.

Runs on asyncio (its MQTT client, aiomqtt, is asyncio-only) until Ctrl-C or SIGTERM,
which stop it cleanly (acquisition first, then the sinks get what the spool holds).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import UsageError
from ._runtime import Options
from ._sim import _termination_signals

if TYPE_CHECKING:
    from ..gateway.config import GatewayConfig


def add_gateway_parser(command: argparse.ArgumentParser) -> None:
    """The ``gateway`` subcommand's arguments."""
    command.add_argument(
        "config", nargs="?", metavar="CONFIG.toml", help="the configuration (docs/gateway.md)"
    )
    command.add_argument(
        "--demo",
        action="store_true",
        help="run against simulated instruments (examples/gateway/demo.toml), no file needed",
    )
    command.add_argument(
        "--check", action="store_true", help="validate the configuration, then exit"
    )
    command.add_argument(
        "--data-dir",
        metavar="DIR",
        help="with --demo: keep the demo's files here (default: a new temporary directory)",
    )


def _load(args: argparse.Namespace) -> tuple[GatewayConfig, str]:
    if args.demo == (args.config is not None):
        raise UsageError("give a CONFIG.toml or --demo (one of them)")
    if args.data_dir is not None and not args.demo:
        raise UsageError("--data-dir is for --demo; a configuration sets [gateway] data_dir")
    if args.demo:
        from ..gateway.demo import demo_config

        data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="aiotmc-gateway-demo-"))
        return demo_config(data_dir)
    from ..gateway.config import load_config

    return load_config(args.config), ""


def _summary(config: GatewayConfig) -> str:
    settings = config.gateway
    channels = sum(len(i.channels) for i in config.instruments)
    parts = ", ".join(c.name for c in config.components) or "none"
    return (
        f"gateway {settings.id} ({settings.site}/{settings.host}): "
        f"{len(config.instruments)} instruments, {channels} channels; "
        f"sinks: {', '.join(s.name for s in config.sinks)}; parts: {parts}; "
        f"data in {settings.data_dir}"
    )


def cmd_gateway(args: argparse.Namespace, options: Options) -> int:
    config, banner = _load(args)
    where = "demo" if args.demo else args.config
    if args.check:
        print(f"{where}: ok: {_summary(config)}")
        return 0
    if options.backend != "asyncio":
        raise UsageError("the gateway runs on asyncio only (its MQTT client is asyncio-only)")
    if not (options.verbose or options.trace):
        # a service: its warnings (instrument offline, sink unavailable...) go to stderr
        # with a time and where they come from (-v: also INFO, see start_logging)
        from .._log import log_to_screen

        log_to_screen(logging.WARNING)

    async def run() -> None:
        from ..gateway.app import Gateway

        with _termination_signals() as terminated:
            async with Gateway(config):
                print(f"aiotmc: running {_summary(config)}", file=sys.stderr, flush=True)
                if banner:
                    print(f"aiotmc: {banner}", file=sys.stderr, flush=True)
                print("aiotmc: Ctrl-C to stop", file=sys.stderr, flush=True)
                await terminated()
        print("aiotmc: gateway stopped", file=sys.stderr)

    import anyio

    uvloop = config.gateway.loop == "uvloop"
    anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True} if uvloop else {})
    return 0
