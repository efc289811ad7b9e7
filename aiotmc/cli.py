"""The ``aiotmc`` command line: list, query, write, read-block, shell, sim and demo.

``main(argv)`` returns the exit status: 0 success, 1 operational error (connection refused,
timeout, instrument error), 2 usage error (bad option, invalid resource name), 130
interrupted. Errors print one line, ``aiotmc: error: <message>``; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from ._exceptions import AiotmcError, InvalidResourceName
from ._version import __version__
from .resources import ResourceName, TcpipSocket, UsbInstr, parse_resource

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from ._usb.discovery import UsbResourceInfo
    from .instrument import Instrument
    from .sim.device import SimDevice

__all__ = ["build_parser", "main"]

T = TypeVar("T")

SIM_MODELS: dict[str, str] = {
    "dmm": "digital multimeter",
    "psu": "DC power supply",
    "wavegen": "waveform generator",
    "scope": "oscilloscope",
}
"""Simulated models shipped with aiotmc and what they are (``SIM::<model>``)."""

DEFAULT_SIM_PORT = 5025
RESOURCE_HELP = "e.g. TCPIP::192.168.1.5::5025::SOCKET, USB::0x0957::0x1796::INSTR, SIM::dmm"
HISTORY_FILE = "~/.aiotmc_history"


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class CommandError(Exception):
    """A command failed for a reason outside aiotmc's exception tree (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``aiotmc: error: <message> (see 'aiotmc ... --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aiotmc: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- argument parsing


def _timeout(text: str) -> float | None:
    if text.lower() in ("none", "inf", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"timeout must be > 0 seconds, got {text!r}")
    return value


def _resource(text: str) -> ResourceName:
    try:
        return parse_resource(text)
    except InvalidResourceName as exc:
        raise argparse.ArgumentTypeError(describe(exc)) from None


def _device_spec(text: str) -> tuple[str, int | None]:
    model, _, port = text.partition(":")
    if not model.isidentifier():
        raise argparse.ArgumentTypeError(f"expected MODEL[:PORT], got {text!r}")
    if not port:
        return model.lower(), None
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0: any free port), got {port!r}")
    return model.lower(), int(port)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    common = _Parser(add_help=False)
    options = common.add_argument_group("global options")
    options.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=argparse.SUPPRESS,
        help="event loop to run on (default: asyncio)",
    )
    options.add_argument(
        "--timeout",
        type=_timeout,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="per-operation timeout, 'none' to wait forever (default: 10)",
    )
    options.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of errors",
    )

    parser = _Parser(
        prog="aiotmc",
        description="Talk to SCPI test instruments over USBTMC and TCP, or simulate them.",
        epilog=(
            "resources: TCPIP::host::port::SOCKET, USB::vid::pid[::serial]::INSTR, "
            "SIM::model (in-process simulator). Try 'aiotmc demo'."
        ),
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"aiotmc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, parents=[common])

    command("list", "list USB instruments and the simulated instruments")

    query = command("query", "send queries and print the answers")
    query.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)
    query.add_argument("commands", nargs="+", metavar="CMD", help="e.g. '*IDN?'")

    write = command(
        "write",
        "send commands",
        "Send commands, then wait for '*OPC?' (or with --check read the error queue), so "
        "that they have been executed when the command exits.",
    )
    write.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)
    write.add_argument("commands", nargs="+", metavar="CMD", help="e.g. 'VOLT 5'")
    write.add_argument(
        "--check", action="store_true", help="then read the error queue (SYST:ERR?), fail if any"
    )

    block = command(
        "read-block",
        "query an IEEE 488.2 binary block and save its payload",
        "Query an IEEE 488.2 binary block (#<n><len><data>) and save the payload. Progress "
        "(elapsed time) is shown on stderr when it is a terminal, or with --progress.",
    )
    block.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)
    block.add_argument("cmd", metavar="CMD", help="e.g. ':WAVeform:DATA?'")
    block.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for stdout")
    block.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )

    shell = command(
        "shell",
        "interactive session with one instrument",
        "Interactive session: lines ending in '?' are queries, others are written. Shell "
        "commands: :block CMD [> FILE], :stb, :clear, :trigger, :errors, :timeout [S], :help, "
        ":quit. With stdin not a terminal, lines are read until end of input and the exit "
        "status is 1 if any line failed. History is kept in ~/.aiotmc_history.",
    )
    shell.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)

    sim = command(
        "sim",
        "serve simulated instruments on TCP",
        "Serve simulated instruments as raw SCPI sockets until Ctrl-C or SIGTERM. Prints one "
        "line per instrument: its resource name and model. Without --device: one dmm on "
        "port 5025; devices without a port take 5025, 5026... in order; port 0 picks a free "
        f"port. Models: {', '.join(SIM_MODELS)}.",
    )
    sim.add_argument(
        "--device",
        action="append",
        type=_device_spec,
        metavar="MODEL[:PORT]",
        help="a simulated instrument to serve (repeatable)",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )

    command(
        "demo",
        "tour: simulated instruments driven concurrently",
        "Start a simulated DMM, power supply, waveform generator and oscilloscope on "
        "loopback TCP, open and identify them concurrently, run a concurrent acquisition, "
        "then the same acquisition sequentially, and report both timings.",
    )
    return parser


@dataclass
class Options:
    """Global options after parsing (the subcommand's own are on the namespace)."""

    backend: str = "asyncio"
    timeout: float | None = 10.0
    debug: bool = False


def _options(args: argparse.Namespace) -> Options:
    return Options(
        backend=getattr(args, "backend", "asyncio"),
        timeout=getattr(args, "timeout", 10.0),
        debug=getattr(args, "debug", False),
    )


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 1
    options = _options(args)
    command: Callable[[argparse.Namespace, Options], int] = _COMMANDS[args.command]
    try:
        return command(args, options)
    except BaseException as exc:
        if isinstance(_leaf(exc), KeyboardInterrupt):
            if args.command == "sim":
                print("aiotmc: simulators stopped", file=sys.stderr)
                return 0
            print("aiotmc: interrupted", file=sys.stderr)
            return 130
        if not isinstance(exc, Exception):
            raise  # SystemExit and the like are not ours to report
        return _report(exc, debug=options.debug)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """One line for the user."""
    exc = _leaf(exc)
    if isinstance(exc, InvalidResourceName):
        first = str(exc).splitlines()[0] if str(exc) else "invalid resource name"
        return f"invalid resource name {exc.resource!r}: {first}" if exc.resource else first
    if isinstance(exc, AiotmcError | UsageError | CommandError):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _report(exc: BaseException, *, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    print(f"aiotmc: error: {describe(exc)}", file=sys.stderr)
    leaf = _leaf(exc)
    return 2 if isinstance(leaf, InvalidResourceName | UsageError) else 1


def _run(options: Options, func: Callable[[], Awaitable[T]]) -> T:
    import anyio

    _check_backend(options.backend)
    return anyio.run(func, backend=options.backend)


def _check_backend(backend: str) -> None:
    if backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            raise UsageError("the trio backend needs trio: pip install 'aiotmc[trio]'") from None


def _open(resource: ResourceName, options: Options) -> AbstractAsyncContextManager[Instrument]:
    from ._open import open as open_instrument

    return open_instrument(resource, timeout=options.timeout, connect_timeout=options.timeout)


# --------------------------------------------------------------------------- list


def _cmd_list(args: argparse.Namespace, options: Options) -> int:
    async def run() -> list[tuple[str, str]]:
        return await _usb_instruments()

    usb = _run(options, run)
    rows = list(usb)
    rows += [
        (f"SIM::{model}", f"simulated {what} (in-process)") for model, what in SIM_MODELS.items()
    ]
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"{name:<{width}}  {what}")
    return 0


async def _usb_instruments() -> list[tuple[str, str]]:
    """``(resource, description)`` for attached USBTMC instruments; notes problems on stderr."""
    import anyio

    try:
        from ._usb.discovery import list_usbtmc_devices
    except ImportError as exc:  # the "usb" extra (libusb1) is not installed
        print(f"aiotmc: note: USB discovery unavailable ({exc})", file=sys.stderr)
        return []
    try:
        found = await anyio.to_thread.run_sync(list_usbtmc_devices, abandon_on_cancel=True)
    except Exception as exc:  # no libusb, no permission to enumerate...
        print(f"aiotmc: note: cannot list USB instruments ({describe(exc)})", file=sys.stderr)
        return []
    if not found:
        print("aiotmc: note: no USB instruments found", file=sys.stderr)
    rows = []
    for info in found:
        words = [w for w in (info.manufacturer, info.product) if w] or ["USBTMC instrument"]
        if info.usb488:
            words.append("(USB488)")
        if not info.accessible:
            words.append("(no access: check the udev rules / driver)")
        rows.append((_usb_name(info), " ".join(words)))
    return rows


def _usb_name(info: UsbResourceInfo) -> str:
    """The canonical name (serial left out when the device has none: an aiotmc extension)."""
    try:
        return str(
            UsbInstr(
                vid=info.vid,
                pid=info.pid,
                serial=info.serial or None,
                interface=info.interface or None,
            )
        )
    except InvalidResourceName:  # e.g. a serial number with spaces
        return info.visa_name


def _describe_sim(model: str) -> str:
    return f"simulated {SIM_MODELS.get(model, model)} (in-process)"


# --------------------------------------------------------------------------- query / write


def _cmd_query(args: argparse.Namespace, options: Options) -> int:
    async def run() -> None:
        async with _open(args.resource, options) as inst:
            for cmd in args.commands:
                print(await inst.query(cmd), flush=True)

    _run(options, run)
    return 0


def _cmd_write(args: argparse.Namespace, options: Options) -> int:
    async def run() -> None:
        async with _open(args.resource, options) as inst:
            for cmd in args.commands:
                await inst.write(cmd)
            if args.check:
                await inst.check_errors()
            else:
                # A round trip, so the commands have reached the instrument before we close.
                await inst.query("*OPC?")

    _run(options, run)
    return 0


# --------------------------------------------------------------------------- read-block


def _cmd_read_block(args: argparse.Namespace, options: Options) -> int:
    show = args.progress if args.progress is not None else sys.stderr.isatty()

    async def run() -> tuple[bytearray, float]:
        import anyio

        async with _open(args.resource, options) as inst, anyio.create_task_group() as tg:
            start = time.perf_counter()
            if show:
                tg.start_soon(_spinner, f"{args.cmd} from {args.resource}", start)
            data = await inst.query_block(args.cmd)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
        return data, elapsed

    data, elapsed = _run(options, run)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        where = "stdout"
    else:
        Path(args.output).write_bytes(data)
        where = args.output
    rate = len(data) / elapsed / 1e6 if elapsed > 0 else math.inf
    print(
        f"wrote {len(data)} bytes to {where} in {elapsed:.3f} s ({rate:.2f} MB/s)",
        file=sys.stderr,
    )
    return 0


async def _spinner(what: str, start: float) -> None:
    """Elapsed time on stderr (query_block exposes no byte count, so no percentage)."""
    import anyio

    frames = "|/-\\"
    tick = 0
    try:
        while True:
            await anyio.sleep(0.1)
            tick += 1
            elapsed = time.perf_counter() - start
            sys.stderr.write(f"\r{frames[tick % 4]} reading {what}  {elapsed:5.1f} s")
            sys.stderr.flush()
    finally:
        if tick:
            sys.stderr.write("\r\x1b[K")  # erase the line, also when the query failed
            sys.stderr.flush()


# --------------------------------------------------------------------------- shell

SHELL_HELP = """\
  CMD?              query (any line ending in '?'), print the answer
  CMD               write
  :block CMD [> F]  query a binary block; show its size, or save it to file F
  :stb              read the status byte
  :clear            device clear
  :trigger          trigger
  :errors           read the error queue (SYST:ERR?)
  :timeout [S]      show or set the timeout in seconds ('none': forever)
  :help             this text
  :quit             leave (or end of input, Ctrl-D)"""


def _cmd_shell(args: argparse.Namespace, options: Options) -> int:
    from anyio.from_thread import start_blocking_portal

    _check_backend(options.backend)
    interactive = sys.stdin.isatty()
    # The event loop runs in the portal's thread; this thread blocks in input() so that
    # line editing, history and Ctrl-C behave as in any other REPL.
    with (
        start_blocking_portal(backend=options.backend) as portal,
        portal.wrap_async_context_manager(_open(args.resource, options)) as inst,
    ):
        return Shell(inst, portal, interactive=interactive).run()


@dataclass
class Shell:
    """The ``aiotmc shell`` loop; each instrument call runs on the portal's event loop."""

    inst: Instrument
    portal: BlockingPortal
    interactive: bool
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    failures: int = 0
    _busy: bool = False

    def call(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        future: Future[T] = self.portal.start_task_soon(func, *args)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task's scope on the event loop
            raise

    def run(self) -> int:
        """Read and execute lines until ``:quit`` or end of input; returns the exit status."""
        with self._history():
            if self.interactive:
                print(f"connected to {self.inst.resource}; ':help' for help, Ctrl-D to quit")
            while True:
                self._busy = False
                try:
                    if not self.step():
                        break
                except KeyboardInterrupt:
                    if not self.interactive:
                        raise
                    # Ctrl-C at the prompt drops the line; during a command it cancels it.
                    if self._busy:
                        print("interrupted", file=sys.stderr)
                        self.failures += 1
                    else:
                        print()
        return 1 if self.failures and not self.interactive else 0

    def step(self) -> bool:
        """Read and run one line; False at the end."""
        try:
            line = self._read_line(f"{self.inst.resource}> ").strip()
        except EOFError:
            if self.interactive:
                print()
            return False
        if not line or line.startswith("#"):
            return True
        self._busy = True
        try:
            return self.execute(line)
        except Exception as exc:
            print(f"error: {describe(exc)}", file=sys.stderr)
            self.failures += 1
            return True

    def _read_line(self, prompt: str) -> str:
        if self.interactive:
            return input(prompt)
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line

    @contextlib.contextmanager
    def _history(self) -> Iterator[None]:
        if not self.interactive:
            yield
            return
        try:
            import readline
        except ImportError:  # Windows without pyreadline
            yield
            return
        path = os.path.expanduser(HISTORY_FILE)
        with contextlib.suppress(OSError):
            readline.read_history_file(path)
        readline.set_history_length(1000)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                readline.write_history_file(path)

    def execute(self, line: str) -> bool:
        """Run one line; False means quit."""
        inst = self.inst
        # SCPI headers may start with ':' too (":MEAS:VOLT?"); shell commands are the
        # lower-case words of _SHELL_COMMANDS, so ":TRIGger" still goes to the instrument.
        word, _, rest = line.partition(" ")
        name = word
        if name in _SHELL_COMMANDS:
            rest = rest.strip()
            if name in (":quit", ":q", ":exit"):
                return False
            if name == ":help":
                print(SHELL_HELP)
            elif name == ":stb":
                print(_format_stb(int(self.call(inst.read_stb))))
            elif name == ":clear":
                self.call(inst.clear)
            elif name == ":trigger":
                self.call(inst.trigger)
            elif name == ":errors":
                errors = self.call(inst.errors)
                for error in errors:
                    print(f'{error.code}, "{error.message}"')
                if not errors:
                    print('0, "No error"')
            elif name == ":timeout":
                if rest:
                    try:
                        inst.timeout = _timeout(rest)
                    except argparse.ArgumentTypeError as exc:
                        raise UsageError(str(exc)) from None
                print(f"timeout: {inst.timeout if inst.timeout is not None else 'none'}")
            elif name == ":block":
                self._block(rest)
            return True
        if line.endswith("?") or word.endswith("?"):  # "*IDN?", "MEAS:VOLT? 10,0.001"
            print(self.call(inst.query, line), flush=True)
        else:
            self.call(inst.write, line)
        return True

    def _block(self, rest: str) -> None:
        command, _, target = rest.partition(">")
        command, target = command.strip(), target.strip()
        if not command:
            raise UsageError("usage: :block CMD [> FILE]")
        data = self.call(self.inst.query_block, command)
        if target:
            Path(target).write_bytes(data)
            print(f"wrote {len(data)} bytes to {target}")
        else:
            preview = bytes(data[:16]).hex(" ")
            more = " ..." if len(data) > 16 else ""
            print(f"{len(data)} bytes: {preview}{more}", flush=True)


_SHELL_COMMANDS = frozenset(
    [":block", ":stb", ":clear", ":trigger", ":errors", ":timeout", ":help", ":quit", ":q", ":exit"]
)


def _format_stb(value: int) -> str:
    from ._types import StatusByte

    names = [flag.name for flag in StatusByte if flag and value & flag and flag.name]
    return f"{value} (0x{value:02X}{': ' + ' '.join(names) if names else ''})"


# --------------------------------------------------------------------------- sim


def _cmd_sim(args: argparse.Namespace, options: Options) -> int:
    specs: list[tuple[str, int | None]] = args.device or [("dmm", None)]
    next_port = DEFAULT_SIM_PORT
    plan: list[tuple[str, int]] = []
    for model, port in specs:
        if port is None:
            port, next_port = next_port, next_port + 1
        plan.append((model, port))

    async def run() -> None:
        from .sim.server import serve_many

        devices = [_create_device(model) for model, _ in plan]
        try:
            serving = serve_many(devices, host=args.host, ports=[port for _, port in plan])
            # Catch the signals before saying "ready", so that nobody can stop us uncleanly.
            with _termination_signals() as terminated:
                async with serving as servers:
                    for (model, _), server in zip(plan, servers, strict=True):
                        resource = TcpipSocket(host=args.host, port=server.port)
                        print(f"{resource}  {model}", flush=True)
                    print(
                        f"aiotmc: serving {len(servers)} simulated instrument(s); Ctrl-C to stop",
                        file=sys.stderr,
                        flush=True,
                    )
                    await terminated()
        except OSError as exc:
            ports = ", ".join(str(port) for _, port in plan)
            raise CommandError(
                f"cannot listen on {args.host} port {ports}: {exc.strerror or exc}"
            ) from exc
        print("aiotmc: simulators stopped", file=sys.stderr)

    _run(options, run)
    return 0


def _sim_models() -> list[str]:
    from .sim.devices import MODELS

    return [m for m in SIM_MODELS if m in MODELS] + sorted(m for m in MODELS if m not in SIM_MODELS)


def _create_device(model: str, **kwargs: Any) -> SimDevice:
    from .sim.devices import MODELS, create_device

    if model not in MODELS:
        raise UsageError(f"unknown simulated model {model!r}, expected {', '.join(_sim_models())}")
    return create_device(model, **kwargs)


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


# --------------------------------------------------------------------------- demo

DEMO_ROUNDS = 20


def _cmd_demo(args: argparse.Namespace, options: Options) -> int:
    return _run(options, lambda: _demo(options))


@asynccontextmanager
async def open_all(
    resources: dict[str, ResourceName], options: Options
) -> AsyncIterator[dict[str, Instrument]]:
    """Open several instruments concurrently; all are closed when the block exits.

    Each instrument lives in its own task (the nursery pattern): the task opens it, reports
    it, then holds it open until the block is done, so every context manager is entered and
    exited by the same task. If one fails to open, the others are closed and the error
    propagates.
    """
    import anyio

    opened: dict[str, Instrument] = {}
    all_open = anyio.Event()
    release = anyio.Event()

    async def hold(name: str, resource: ResourceName) -> None:
        async with _open(resource, options) as inst:
            opened[name] = inst
            if len(opened) == len(resources):
                all_open.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for name, resource in resources.items():
            tg.start_soon(hold, name, resource)
        await all_open.wait()
        try:
            yield opened
        finally:
            release.set()


@dataclass
class _Acquisition:
    """What the demo measured, per instrument."""

    dmm_volts: list[float] = field(default_factory=list)
    psu_volts: list[float] = field(default_factory=list)
    psu_amps: list[float] = field(default_factory=list)
    wavegen_hz: list[tuple[float, float]] = field(default_factory=list)  # (set, read back)
    scope_sizes: list[int] = field(default_factory=list)
    exchanges: int = 0


Step = Callable[["Instrument", _Acquisition, int], Coroutine[Any, Any, None]]


async def _dmm_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    acq.dmm_volts.append(float(await inst.query("READ?")))
    acq.exchanges += 1


async def _psu_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    acq.psu_volts.append(float(await inst.query("MEAS:VOLT?")))
    acq.psu_amps.append(float(await inst.query("MEAS:CURR?")))
    acq.exchanges += 2


async def _wavegen_step(inst: Instrument, acq: _Acquisition, round_: int) -> None:
    frequency = 1000.0 * (round_ + 1)  # a sweep: 1 kHz, 2 kHz, ...
    await inst.write(f"FREQ {frequency:g}")
    acq.wavegen_hz.append((frequency, float(await inst.query("FREQ?"))))
    acq.exchanges += 2


async def _scope_step(inst: Instrument, acq: _Acquisition, _round: int) -> None:
    await inst.write(":SINGle")  # arm a single acquisition
    await inst.query("*OPC?")  # answers once the acquisition is complete
    acq.scope_sizes.append(len(await inst.query_block(":WAVeform:DATA?")))
    acq.exchanges += 3


DEMO_STEPS: dict[str, tuple[str, Step]] = {
    "dmm": ("READ?", _dmm_step),
    "psu": ("MEAS:VOLT?, MEAS:CURR?", _psu_step),
    "wavegen": ("FREQ <f>, FREQ?", _wavegen_step),
    "scope": (":SINGle, *OPC?, :WAVeform:DATA?", _scope_step),
}
DEMO_SETUP: dict[str, tuple[str, ...]] = {
    "psu": ("VOLT 5", "CURR 0.5", "OUTP ON"),
    "wavegen": ("FUNC SIN", "VOLT 1", "OUTP ON"),
    "scope": (":TRIGger:SOURce IMMediate", ":ACQuire:POINts 10000"),
}
DEMO_DEVICES: dict[str, tuple[dict[str, float], str]] = {
    # Simulated instrument timing, so that the comparison means something.
    "dmm": ({"measurement_time": 0.02}, "20 ms per reading"),
    "psu": ({"latency": 0.005}, "5 ms per answer"),
    "wavegen": ({"latency": 0.002}, "2 ms per answer"),
    "scope": ({"acquisition_time": 0.03}, "30 ms per acquisition"),
}


async def _acquire(
    insts: dict[str, Instrument], rounds: int, *, concurrent: bool
) -> tuple[_Acquisition, float]:
    import anyio

    acq = _Acquisition()
    start = time.perf_counter()
    for round_ in range(rounds):
        if concurrent:
            # One round = every instrument at once; the round ends when the slowest is done.
            async with anyio.create_task_group() as tg:
                for name, (_, step) in DEMO_STEPS.items():
                    tg.start_soon(step, insts[name], acq, round_)
        else:
            for name, (_, step) in DEMO_STEPS.items():
                await step(insts[name], acq, round_)
    return acq, time.perf_counter() - start


def _stats(values: Sequence[float], unit: str) -> str:
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"mean {mean:.6f} {unit} (sd {spread:.1e}, min {min(values):.6f}, max {max(values):.6f})"


async def _demo(options: Options) -> int:
    import anyio

    from .sim.server import serve_many

    out = functools.partial(print, flush=True)
    models = list(DEMO_STEPS)
    out(f"aiotmc {__version__} demo ({options.backend} backend)")
    out(f"1. start {len(models)} simulated instruments, each on its own TCP port on 127.0.0.1")
    out("   (" + ", ".join(f"{m} {DEMO_DEVICES[m][1]}" for m in models) + ")")
    devices = [_create_device(m, **DEMO_DEVICES[m][0]) for m in models]
    async with serve_many(devices, host="127.0.0.1") as servers:
        resources: dict[str, ResourceName] = {
            model: TcpipSocket(host="127.0.0.1", port=server.port)
            for model, server in zip(models, servers, strict=True)
        }
        out("2. open and identify them all concurrently (*IDN?)")
        start = time.perf_counter()
        async with open_all(resources, options) as insts:
            identities: dict[str, str] = {}

            async def identify(name: str) -> None:
                identities[name] = await insts[name].query("*IDN?")

            async with anyio.create_task_group() as tg:
                for name in models:
                    tg.start_soon(identify, name)
            took = time.perf_counter() - start
            for name in models:
                out(f"   {name:<8} {resources[name]!s:<34} {identities[name]}")
            out(f"   opened and identified in {took * 1e3:.1f} ms")

            for name, commands in DEMO_SETUP.items():
                for cmd in commands:
                    await insts[name].write(cmd)

            out(
                f"3. acquire {DEMO_ROUNDS} rounds; in each round all {len(models)} "
                "instruments are read concurrently:"
            )
            for name, (summary, _) in DEMO_STEPS.items():
                out(f"   {name:<8} {summary}")
            acq, concurrent = await _acquire(insts, DEMO_ROUNDS, concurrent=True)
            out("4. the same rounds again, one instrument after the other (for comparison)")
            _, sequential = await _acquire(insts, DEMO_ROUNDS, concurrent=False)

            errors = {name: await inst.errors() for name, inst in insts.items()}

    readback_ok = all(math.isclose(a, b, rel_tol=1e-6) for a, b in acq.wavegen_hz)
    total_bytes = sum(acq.scope_sizes)
    out("results")
    out(f"   dmm      {len(acq.dmm_volts)} readings: {_stats(acq.dmm_volts, 'V')}")
    out(
        f"   psu      {len(acq.psu_volts)} x2 readings: {_stats(acq.psu_volts, 'V')}, "
        f"mean {statistics.fmean(acq.psu_amps):.4f} A"
    )
    low, high = acq.wavegen_hz[0][0], acq.wavegen_hz[-1][0]
    out(
        f"   wavegen  swept {low:g}..{high:g} Hz, "
        f"read back {'matches' if readback_ok else 'DIFFERS'}"
    )
    out(
        f"   scope    {len(acq.scope_sizes)} waveforms, "
        f"{total_bytes / len(acq.scope_sizes):.0f} bytes each ({total_bytes / 1e3:.1f} kB)"
    )
    for name, found in errors.items():
        for error in found:
            out(f"   {name:<8} reported error {error.code}, {error.message}")
    out("timing")
    per_round = 1e3 / DEMO_ROUNDS
    out(
        f"   concurrent  {concurrent:6.3f} s  ({concurrent * per_round:.1f} ms per round, "
        f"{acq.exchanges} exchanges)"
    )
    out(f"   sequential  {sequential:6.3f} s  ({sequential * per_round:.1f} ms per round)")
    out(f"   speed-up    {sequential / concurrent:.1f}x")
    return 0 if readback_ok and not any(errors.values()) else 1


_COMMANDS: dict[str, Callable[[argparse.Namespace, Options], int]] = {
    "list": _cmd_list,
    "query": _cmd_query,
    "write": _cmd_write,
    "read-block": _cmd_read_block,
    "shell": _cmd_shell,
    "sim": _cmd_sim,
    "demo": _cmd_demo,
}
