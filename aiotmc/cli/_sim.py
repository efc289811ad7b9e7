"""``aiotmc sim``: serve simulated instruments on TCP (and VXI-11, HiSLIP) until Ctrl-C
or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

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
    hislip_options = _hislip_options(args)

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
                    _hislip(args, devices, hislip_options) as hislip_resources,
                ):
                    for (model, _), server in zip(plan, servers, strict=True):
                        resource = TcpipSocket(host=args.host, port=server.port)
                        print(f"{resource}  {model}", flush=True)
                    for (model, _), name in zip(plan, vxi11_resources, strict=False):
                        print(f"{name}  {model} (VXI-11)", flush=True)
                    for index, name, how in more:
                        model = plan[index][0] if index >= 0 else "adapter"
                        print(f"{name}  {model} {how}", flush=True)
                    for (model, _), name in zip(plan, hislip_resources, strict=False):
                        print(f"{name}  {model} (HiSLIP)", flush=True)
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


def _hislip_options(args: argparse.Namespace) -> dict[str, Any]:
    """HislipServer keywords from the ``--hislip-*`` options (checked before serving)."""
    if args.hislip is None:
        if args.hislip_tls or args.hislip_overlapped or args.hislip_users or args.hislip_strict:
            raise UsageError("the --hislip-* options need --hislip PORT")
        return {}
    options: dict[str, Any] = {"overlapped": args.hislip_overlapped}
    if args.hislip_strict:
        options["strict"] = True
    if (args.hislip_require_tls or args.hislip_users) and not args.hislip_tls:
        raise UsageError("--hislip-require-tls and --hislip-users need --hislip-tls CERT KEY")
    if args.hislip_tls:
        cert, key = args.hislip_tls
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--hislip-tls: cannot load {cert} / {key}: {exc}") from None
        options.update(tls=context, require_tls=args.hislip_require_tls)
    if args.hislip_users:
        options["users"] = _read_users(args.hislip_users)
    return options


def _read_users(path: str) -> dict[str, str]:
    users: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                line = line.rstrip("\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, colon, password = line.partition(":")
                if not colon or not name:
                    raise UsageError(f"--hislip-users {path}:{number}: expected user:password")
                users[name] = password
    except OSError as exc:
        raise UsageError(f"--hislip-users: {exc.strerror or exc}: {path}") from None
    if not users:
        raise UsageError(f"--hislip-users {path}: no users")
    return users


@contextlib.asynccontextmanager
async def _hislip(
    args: argparse.Namespace, devices: list[SimDevice], options: dict[str, Any]
) -> AsyncIterator[list[str]]:
    """The same devices over HiSLIP when ``--hislip`` asks for it: their resource names."""
    if args.hislip is None:
        yield []
        return
    from ..sim.hislip_server import HislipServer

    async with contextlib.AsyncExitStack() as stack:
        resources = []
        for index, device in enumerate(devices):
            server = HislipServer(
                device,
                host=args.host,
                port=args.hislip + index if args.hislip else 0,
                max_connections=args.max_connections,
                idle_timeout=math.inf if args.idle_timeout is None else args.idle_timeout,
                send_timeout=math.inf if args.send_timeout is None else args.send_timeout,
                **options,
            )
            await stack.enter_async_context(server)
            resources.append(server.resource)
        yield resources


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
