"""LAN instruments: DNS-SD browsing (python-zeroconf, the ``discovery`` extra) and unicast
probing of hosts the user names.

* :func:`browse` listens for ``_hislip._tcp``, ``_lxi._tcp``, ``_vxi-11._tcp`` and
  ``_scpi-raw._tcp`` announcements for a moment and resolves each instance (in a worker
  thread: python-zeroconf runs its own loop, which trio cannot host).
* :func:`probe` tries TCP connections to the HiSLIP (4880), raw SCPI (5025) and ONC RPC
  portmapper (111, VXI-11) ports of named hosts; nothing multicast.
* :func:`list_lan_resources` is what ``aiotmc.list_resources()`` / ``aiotmc list`` call:
  both of the above, hosts from ``AIOTMC_LAN_HOSTS`` (spaces or commas between names),
  browsing for ``AIOTMC_MDNS_SECONDS`` (default 1 s; 0 turns browsing off).

Resource names use the instance's IPv4 address (no mDNS resolver needed to open them);
the description carries the instance and host names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio

from .._exceptions import UnsupportedOperation
from ..protocol.hislip import DEFAULT_PORT as HISLIP_PORT
from .spec import FoundResource

__all__ = ["SERVICE_TYPES", "browse", "list_lan_resources", "probe", "resource_for"]

SERVICE_TYPES: Final = (
    "_hislip._tcp.local.",
    "_lxi._tcp.local.",
    "_vxi-11._tcp.local.",
    "_scpi-raw._tcp.local.",
)
SCPI_RAW_PORT: Final = 5025
PORTMAPPER_PORT: Final = 111
DEFAULT_BROWSE_SECONDS: Final = 1.0
_MAX_INSTANCES: Final = 512  #: a flood of announcements is cut here


@dataclass(frozen=True, slots=True)
class _Instance:
    type: str
    name: str
    address: str
    port: int
    server: str


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def resource_for(service_type: str, address: str, port: int) -> str | None:
    """The VISA resource name an announcement stands for (None: not an instrument)."""
    host = _host(address)
    kind = service_type.split(".")[0]
    if kind == "_hislip":
        board = "hislip0" if port == HISLIP_PORT else f"hislip0,{port}"
        return f"TCPIP0::{host}::{board}::INSTR"
    if kind == "_scpi-raw":
        return f"TCPIP0::{host}::{port}::SOCKET"
    if kind in ("_lxi", "_vxi-11"):
        return f"TCPIP0::{host}::inst0::INSTR"  # LXI devices speak VXI-11
    return None


def _browse_blocking(
    seconds: float, interfaces: Sequence[str] | None, types: Sequence[str]
) -> list[_Instance]:
    try:
        from zeroconf import (
            DNSQuestionType,
            InterfaceChoice,
            IPVersion,
            ServiceBrowser,
            ServiceListener,
            Zeroconf,
        )
    except ImportError:
        raise UnsupportedOperation(
            'DNS-SD browsing needs python-zeroconf: pip install "aiotmc[discovery]"'
        ) from None

    seen: dict[tuple[str, str], None] = {}

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            if len(seen) < _MAX_INSTANCES:
                seen[(type_, name)] = None

        update_service = add_service

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            return None

    choice: Any = InterfaceChoice.All if interfaces is None else list(interfaces)
    zc = Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
    try:
        # multicast answers (QM): a unicast one may reach another socket on port 5353
        # of this host (an avahi daemon, another responder) instead of ours
        qm = DNSQuestionType.QM
        browser = ServiceBrowser(zc, list(types), Listener(), question_type=qm)
        time.sleep(seconds)
        browser.cancel()
        found: list[_Instance] = []
        for type_, name in list(seen):
            info = zc.get_service_info(type_, name, timeout=500, question_type=qm)
            if info is None or info.port is None:
                continue
            server = (info.server or "").rstrip(".")
            for address in info.parsed_addresses(IPVersion.V4Only):
                found.append(_Instance(type_, name, address, info.port, server))
        return found
    finally:
        zc.close()


async def browse(
    seconds: float = DEFAULT_BROWSE_SECONDS,
    *,
    interfaces: Sequence[str] | None = None,
    types: Sequence[str] = SERVICE_TYPES,
) -> list[FoundResource]:
    """Listen ``seconds`` for DNS-SD instrument announcements on ``interfaces`` (IPv4
    addresses; default all) and return the resources they stand for, one per instance
    and address. Raises :class:`~aiotmc.UnsupportedOperation` without python-zeroconf."""
    instances = await anyio.to_thread.run_sync(
        _browse_blocking, seconds, interfaces, types, abandon_on_cancel=True
    )
    found: dict[str, FoundResource] = {}
    for instance in instances:
        resource = resource_for(instance.type, instance.address, instance.port)
        if resource is None or resource in found:
            continue
        label = instance.name.removesuffix("." + instance.type)
        where = f" on {instance.server}" if instance.server else ""
        kind = instance.type.split(".")[0].lstrip("_")
        found[resource] = FoundResource(resource, f"{label}{where} (DNS-SD {kind})")
    return sorted(found.values(), key=lambda f: f.resource)


async def _open(host: str, port: int, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        try:
            stream = await anyio.connect_tcp(host, port)
        except OSError:
            return False
        await stream.aclose()
        return True
    return False


async def probe(
    hosts: Iterable[str],
    *,
    timeout: float = 0.5,
    hislip_port: int = HISLIP_PORT,
    socket_port: int = SCPI_RAW_PORT,
    portmapper_port: int = PORTMAPPER_PORT,
) -> list[FoundResource]:
    """Unicast probing: which instrument ports answer a TCP connection on each host."""
    checks: list[tuple[str, str, int]] = []
    for host in dict.fromkeys(h.strip() for h in hosts if h.strip()):
        checks += [
            (host, "hislip", hislip_port),
            (host, "socket", socket_port),
            (host, "vxi11", portmapper_port),
        ]
    open_ports: list[bool] = [False] * len(checks)

    async def check(index: int, host: str, port: int) -> None:
        open_ports[index] = await _open(host, port, timeout)

    async with anyio.create_task_group() as tg:
        for index, (host, _, port) in enumerate(checks):
            tg.start_soon(check, index, host, port)
    found: list[FoundResource] = []
    for (host, kind, port), is_open in zip(checks, open_ports, strict=True):
        if not is_open:
            continue
        name = _host(host)
        if kind == "hislip":
            board = "hislip0" if port == HISLIP_PORT else f"hislip0,{port}"
            found.append(FoundResource(f"TCPIP0::{name}::{board}::INSTR", "HiSLIP port open"))
        elif kind == "socket":
            found.append(FoundResource(f"TCPIP0::{name}::{port}::SOCKET", "SCPI port open"))
        else:
            found.append(FoundResource(f"TCPIP0::{name}::inst0::INSTR", "portmapper open"))
    return found


def _hosts_from_env() -> list[str]:
    return os.environ.get("AIOTMC_LAN_HOSTS", "").replace(",", " ").split()


async def list_lan_resources() -> list[FoundResource]:
    """DNS-SD browsing plus probing of ``AIOTMC_LAN_HOSTS`` (see the module docstring)."""
    try:
        seconds = float(os.environ.get("AIOTMC_MDNS_SECONDS", DEFAULT_BROWSE_SECONDS))
    except ValueError:
        seconds = DEFAULT_BROWSE_SECONDS
    found = await probe(_hosts_from_env())
    if seconds > 0:
        found += await browse(seconds)
    unique = {f.resource: f for f in found}
    return list(unique.values())
