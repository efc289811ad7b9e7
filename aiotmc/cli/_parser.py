"""Argument parsing: ``build_parser()`` and the argument types (timeouts, resources, devices)."""

from __future__ import annotations

import argparse
import codecs
import math
import re
from typing import NoReturn

from .._exceptions import InvalidResourceName
from .._timeouts import check_timeout
from .._version import __version__
from ..resources import ResourceName
from . import _sim_serial
from ._catalog import SIM_MODELS
from ._errors import describe

RESOURCE_HELP = "e.g. TCPIP::192.168.1.5::5025::SOCKET, USB::0x0957::0x1796::INSTR, SIM::dmm"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``aiotmc: error: <message> (see 'aiotmc ... --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aiotmc: error: {message} (see '{self.prog} --help')\n")


def parse_timeout(text: str) -> float | None:
    """An instrument timeout, by the API's rule: seconds, 'none' forever, 0 at once,
    no negative values, nothing above 1000 s (a millisecond habit)."""
    if text.lower() in ("none", "inf", "forever"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None
    try:
        return check_timeout(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("None", "'none'")) from None


def parse_limit(text: str) -> float | None:
    """A server-side limit (``sim --idle-timeout``): seconds > 0, or 'none' for never."""
    if text.lower() in ("none", "inf", "never"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds or 'none' (never), got {text!r}")
    return value


def parse_termination(text: str) -> str | None:
    """A termination written with escapes (``\\n``, ``\\r\\n``), or 'none'."""
    if text.lower() == "none":
        return None
    try:
        value = codecs.decode(text, "unicode_escape")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"bad escape in {text!r}: {exc.reason}") from None
    if not value:
        raise argparse.ArgumentTypeError("use 'none' for no termination")
    return value


_SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024): ``512M``."""
    match = re.fullmatch(r"(\d+)([kmg]?)i?b?", text.strip().lower())
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 4096, 64K, 512M, got {text!r}")
    return int(match[1]) * _SIZE_SUFFIXES[match[2]]


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0: any free port), got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _resource(text: str) -> ResourceName:
    from ..registry import registry

    try:
        return registry.parse(text)
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


def _agent_instrument(text: str) -> tuple[str, str]:
    from ._agent import parse_instrument

    return parse_instrument(text)


def _default_agent_name() -> str:
    import re
    import socket

    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "agent"


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
        type=parse_timeout,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="per-operation timeout in seconds (not milliseconds: at most 1000), 'none' to "
        "wait forever, 0 for at once (default: 10)",
    )
    options.add_argument(
        "--read-termination",
        type=parse_termination,
        metavar="TERM",
        default=argparse.SUPPRESS,
        help="end of responses, with escapes ('\\r\\n'), 'none' where the bus marks the end "
        "(default: '\\n')",
    )
    options.add_argument(
        "--write-termination",
        type=parse_termination,
        metavar="TERM",
        default=argparse.SUPPRESS,
        help="appended to commands, with escapes (default: '\\n')",
    )
    options.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log opens, closes and errors on stderr (-vv: also every message, as --trace)",
    )
    options.add_argument(
        "--trace",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log every message sent and received on stderr (logger aiotmc.io)",
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

    listing = command("list", "list attached instruments and the simulated instruments")
    listing.add_argument(
        "--vxi11-hosts",
        metavar="HOSTS",
        help="also ask these hosts, addresses or subnets (comma-separated, e.g. "
        "192.0.2.7,10.0.0.0/28) for VXI-11 instruments (portmapper GETPORT over UDP)",
    )
    listing.add_argument(
        "--vxi11-broadcast",
        metavar="ADDRESS",
        help="also send one VXI-11 portmapper query to this broadcast address",
    )
    listing.add_argument(
        "--vxi11-timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait this long for VXI-11 answers (default: %(default)s)",
    )
    listing.add_argument(
        "--portmapper-port", type=int, default=111, help=argparse.SUPPRESS
    )  # tests: a simulator's portmapper
    command(
        "info",
        "versions and transports",
        "Print the versions of aiotmc and its optional dependencies, and every transport "
        "with whether it works here (and if not, why).",
    )

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
        "Query an IEEE 488.2 binary block (#<n><len><data>) and stream the payload to FILE. "
        "Progress (bytes, percent, rate, time left) is shown on stderr when it is a terminal, "
        "or with --progress.",
    )
    block.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)
    block.add_argument("cmd", metavar="CMD", help="e.g. ':WAVeform:DATA?'")
    block.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for stdout")
    block.add_argument(
        "--max-size",
        type=parse_size,
        default=None,
        metavar="BYTES",
        help="largest payload accepted, e.g. 2G (default: the 256M message limit)",
    )
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
        ":quit; any other ':word' in lower case is a local error, never sent. With stdin "
        "not a terminal, lines are read until end of input and the exit "
        "status is 1 if any line failed. History is kept in ~/.aiotmc_history.",
    )
    shell.add_argument("resource", type=_resource, metavar="RESOURCE", help=RESOURCE_HELP)

    agent = command(
        "agent",
        "serve this host's instruments to other hosts over NATS",
        "Serve instruments through a NATS server until Ctrl-C or SIGTERM: each becomes "
        "nats://SERVER/AGENT/NAME for aiotmc.open on any host (see docs/distributed.md). "
        "Prints one line per instrument.",
    )
    agent.add_argument(
        "instrument",
        nargs="*",
        type=_agent_instrument,
        metavar="NAME=RESOURCE",
        help="an instrument to serve under NAME, e.g. dmm=USB::0x2a8d::0x0101::INSTR",
    )
    agent.add_argument(
        "--nats",
        default="nats://127.0.0.1:4222",
        help="the NATS server URL; several nodes of a cluster separated by commas",
    )
    agent.add_argument(
        "--name", default=_default_agent_name(), help="this agent's name (default: host name)"
    )
    agent.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a gateway configuration: serve its instruments and send their channels' "
        "readings to its sinks (a JetStream sink: the measurement stream)",
    )
    agent.add_argument("--user", default=None, help="NATS user name")
    agent.add_argument(
        "--password-file", default=None, help="a file holding the NATS password (never argv)"
    )
    agent.add_argument(
        "--heartbeat", type=float, default=2.0, help="seconds between presence heartbeats"
    )
    agent.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="TLS to the server, verified with this CA"
    )

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
    sim.add_argument(
        "--max-connections",
        type=_positive_int,
        default=4096,
        metavar="N",
        help="clients served at once per instrument (default: %(default)s)",
    )
    sim.add_argument(
        "--max-text-size",
        type=_positive_int,
        default=4 << 20,
        metavar="BYTES",
        help="program message text per message, block payloads apart (default: %(default)s)",
    )
    sim.add_argument(
        "--idle-timeout",
        type=parse_limit,
        default=3600.0,
        metavar="SECONDS",
        help="drop a client silent this long, 'none' never (default: %(default)s)",
    )
    sim.add_argument(
        "--send-timeout",
        type=parse_limit,
        default=10.0,
        metavar="SECONDS",
        help="drop a client that reads nothing this long, 'none' never (default: %(default)s)",
    )
    sim.add_argument(
        "--vxi11",
        type=_port,
        metavar="PORT",
        help="also serve the instruments over VXI-11, core channel on PORT (0: a free port); "
        "resources TCPIP0::host,PORT::instN::INSTR",
    )
    sim.add_argument(
        "--vxi11-gateway",
        action="store_true",
        help="with --vxi11: as GPIB instruments behind one LAN/GPIB gateway (gpib0,1, gpib0,2...)",
    )
    sim.add_argument(
        "--portmapper",
        type=int,
        default=None,
        metavar="PORT",
        help="with --vxi11: answer portmapper GETPORT on PORT, TCP and UDP (111 when no "
        "portmapper runs; 0: any free port)",
    )
    sim.add_argument(
        "--rpcbind",
        action="store_true",
        help="with --vxi11: register the VXI-11 port with the host's portmapper (rpcbind)",
    )
    sim.add_argument(
        "--hislip",
        type=_port,
        metavar="PORT",
        help="also serve the instruments over HiSLIP, the Nth on PORT+N (0: free ports); "
        "resources TCPIP0::host::hislip0,PORT::INSTR",
    )
    sim.add_argument(
        "--hislip-overlapped",
        action="store_true",
        help="with --hislip: offer overlapped mode (pipelined queries)",
    )
    sim.add_argument(
        "--hislip-strict",
        action="store_true",
        help="with --hislip: refuse (HiSLIP Error) RMT, MessageID and size-limit violations "
        "that the default lenient mode only counts",
    )
    sim.add_argument(
        "--hislip-tls",
        nargs=2,
        metavar=("CERT", "KEY"),
        help="with --hislip: HiSLIP 2.0 TLS with this certificate chain and key (PEM)",
    )
    sim.add_argument(
        "--hislip-require-tls",
        action="store_true",
        help="with --hislip-tls: refuse sessions that do not encrypt",
    )
    sim.add_argument(
        "--hislip-users",
        metavar="FILE",
        help="with --hislip-tls: require SASL login; FILE holds 'user:password' lines",
    )
    _sim_serial.add_arguments(sim, _port)

    from ._nats_users import add_nats_users_parser

    add_nats_users_parser(
        command(
            "nats-users",
            "nats-server users and permissions from agents' gateway [[roles]]",
            "Print the authorization block for nats-server.conf that gives each agent, and "
            "each user of the [[roles]] of its gateway configuration, their rights on the bus "
            "(docs/distributed.md, Security). Passwords are environment variables of "
            "nats-server unless --passwords gives them.",
        )
    )

    from ._gateway import add_gateway_parser

    add_gateway_parser(
        command(
            "gateway",
            "run the IoT gateway: monitoring, storage, alerts, remote control",
            "Acquire readings from the instruments of CONFIG.toml and store, publish and "
            "watch them (docs/gateway.md), until Ctrl-C or SIGTERM. --demo runs it against "
            "simulated instruments; --check validates the configuration only.",
        )
    )

    completion = command(
        "completion",
        "print a completion script for bash or zsh",
        "Print a completion script for the aiotmc command: add "
        "'eval \"$(aiotmc completion bash)\"' to ~/.bashrc (zsh: ~/.zshrc).",
    )
    completion.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")

    command(
        "demo",
        "tour: simulated instruments driven concurrently",
        "Start a simulated DMM, power supply, waveform generator and oscilloscope on "
        "loopback TCP, open and identify them concurrently, run a concurrent acquisition, "
        "then the same acquisition sequentially, and report both timings.",
    )
    return parser
