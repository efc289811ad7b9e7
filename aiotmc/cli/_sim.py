"""``aiotmc sim``: serve simulated instruments on TCP until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from ..resources import TcpipSocket
from ._catalog import sim_device
from ._errors import CommandError, UsageError, host_port
from ._runtime import Options, run_async
from ._sim_serial import serve_serial_and_gpib

if TYPE_CHECKING:
    from ..sim.device import SimDevice

DEFAULT_SIM_PORT = 5025


def cmd_sim(args: argparse.Namespace, options: Options) -> int:
    specs: list[tuple[str, int | None]] = args.device or [("dmm", None)]
    next_port = DEFAULT_SIM_PORT
    plan: list[tuple[str, int]] = []
    for model, port in specs:
        if port is None:
            port, next_port = next_port, next_port + 1
        plan.append((model, port))

    for flag, given in (
        ("--vxi11-gateway", args.vxi11_gateway),
        ("--portmapper", args.portmapper is not None),
        ("--rpcbind", args.rpcbind),
    ):
        if given and args.vxi11 is None:
            raise UsageError(f"{flag} needs --vxi11 PORT")

    async def run() -> None:
        from ..sim.server import raise_fd_limit, serve_many

        devices = [sim_device(model) for model, _ in plan]
        # One descriptor per client: let each instrument reach its connection cap.
        raise_fd_limit(args.max_connections * len(plan) + len(plan) + 64)
        try:
            serving = serve_many(
                devices,
                host=args.host,
                ports=[port for _, port in plan],
                max_connections=args.max_connections,
                max_text_size=args.max_text_size,
                idle_timeout=args.idle_timeout,
                send_timeout=args.send_timeout,
            )
            # Catch the signals before saying "ready", so that nobody can stop us uncleanly.
            with _termination_signals() as terminated:
                async with (
                    serving as servers,
                    _vxi11(args, devices) as vxi11_resources,
                    serve_serial_and_gpib(args, devices) as more,
                ):
                    for (model, _), server in zip(plan, servers, strict=True):
                        resource = TcpipSocket(host=args.host, port=server.port)
                        print(f"{resource}  {model}", flush=True)
                    for (model, _), name in zip(plan, vxi11_resources, strict=False):
                        print(f"{name}  {model} (VXI-11)", flush=True)
                    for index, name, how in more:
                        model = plan[index][0] if index >= 0 else "adapter"
                        print(f"{name}  {model} {how}", flush=True)
                    print(
                        f"aiotmc: serving {len(servers)} simulated instrument(s); Ctrl-C to stop",
                        file=sys.stderr,
                        flush=True,
                    )
                    await terminated()
        except OSError as exc:
            detail = exc.strerror or str(exc)
            if not detail.startswith("cannot listen"):  # the server names the address
                ports = ", ".join(str(port) for _, port in plan)
                detail = f"cannot listen on {host_port(args.host, ports)}: {detail}"
            raise CommandError(detail) from exc
        print("aiotmc: simulators stopped", file=sys.stderr)

    run_async(options, run)
    return 0


@contextlib.asynccontextmanager
async def _vxi11(args: argparse.Namespace, devices: list[SimDevice]) -> AsyncIterator[list[str]]:
    """The same devices over VXI-11 when ``--vxi11`` asks for it: their resource names."""
    if args.vxi11 is None:
        yield []
        return
    from ..sim.vxi11_server import serve_vxi11

    async with serve_vxi11(
        devices,
        gateway=args.vxi11_gateway,
        host=args.host,
        port=args.vxi11,
        portmapper_port=args.portmapper,
        register=args.rpcbind,
        max_connections=args.max_connections,
        idle_timeout=math.inf if args.idle_timeout is None else args.idle_timeout,
        send_timeout=math.inf if args.send_timeout is None else args.send_timeout,
    ) as (server, _):
        pmap = server.portmapper_port
        if pmap is not None:
            print(
                f"aiotmc: portmapper on {host_port(args.host, pmap)} (TCP and UDP)", file=sys.stderr
            )
        if args.rpcbind and not server.registered:
            print("aiotmc: note: no portmapper to register with (rpcbind)", file=sys.stderr)
        # Names without the port only where a client finds it: rpcbind or port 111.
        explicit = not server.registered and pmap != 111
        yield [server.resource(name, explicit_port=explicit) for name in server.devices]


@contextlib.contextmanager
def _termination_signals() -> Iterator[Callable[[], Awaitable[None]]]:
    """Catch SIGINT and SIGTERM; yields ``terminated()``, which returns when one arrives.

    Where signals cannot be caught this way (Windows), ``terminated()`` waits forever and
    Ctrl-C arrives as KeyboardInterrupt instead (handled by :func:`main`).
    """
    import anyio

    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        signals = receiver.__enter__()
    except NotImplementedError:
        yield anyio.sleep_forever
        return

    async def terminated() -> None:
        async for _ in signals:
            return

    try:
        yield terminated
    finally:
        receiver.__exit__(None, None, None)
