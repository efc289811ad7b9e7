"""HiSLIP 2.0: an encrypted session with a SASL login, then pipelined queries from several
tasks in overlapped mode.

python examples/hislip_secure_pipeline.py              # simulator on 127.0.0.1 (needs trustme)
python examples/hislip_secure_pipeline.py TCPIP0::192.0.2.7::hislip0::INSTR \\
    --ca lab-ca.pem --user operator                    # a HiSLIP 2.0 instrument
python examples/hislip_secure_pipeline.py --backend trio

Without a resource the example makes a throwaway certificate authority with ``trustme``,
serves a simulated multimeter with ``HislipServer(..., tls=..., users=...)`` on a free
loopback port and logs in with SCRAM-SHA-256 over TLS: the same messages (AsyncStartTLS,
StartTLS, GetSaslMechanismList, AuthenticationStart/Exchange/Result) as a real
instrument. Then eight tasks share one ``inst.pipeline()``: their queries are all in
flight at once instead of waiting for each other's round trip.
"""

from __future__ import annotations

import argparse
import getpass
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

import aiotmc
from aiotmc.pipeline import Pipeline


@asynccontextmanager
async def open_simulated() -> AsyncIterator[aiotmc.Instrument]:
    """A simulated DMM over HiSLIP with TLS (a throwaway CA) and one user."""
    import ssl

    import trustme

    from aiotmc.sim import create_device
    from aiotmc.sim.hislip_server import HislipServer

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = os.path.join(tmp, "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        server = HislipServer(
            create_device("dmm"),
            tls=server_context,
            require_tls=True,
            users={"operator": "correct horse"},
            overlapped=True,
        )
        async with (
            server,
            aiotmc.open(
                server.resource,
                overlapped=True,
                tls_ca_file=ca_file,
                username="operator",
                password="correct horse",
                timeout=5,
            ) as inst,
        ):
            yield inst


async def main(resource: str | None, options: dict[str, Any]) -> None:
    opened = open_simulated() if resource is None else aiotmc.open(resource, **options)
    async with opened as inst:
        details = inst.transport.info.details
        print(f"{inst.resource}: {await inst.query('*IDN?')}")
        print(
            f"HiSLIP {details.get('protocol_version')}, encryption {details.get('encryption')}"
            f", {details.get('mode')} mode"
        )
        commands = ["*OPC?"] * 40
        started = time.perf_counter()
        for command in commands:
            await inst.query(command)
        one_by_one = time.perf_counter() - started
        if not inst.transport.info.capabilities.pipelining:
            print("no overlapped mode on this instrument: nothing to pipeline")
            return
        answers: list[str] = []

        async def worker(pipe: Pipeline, count: int) -> None:
            for _ in range(count):
                answers.append(await pipe.query("*OPC?"))

        started = time.perf_counter()
        async with inst.pipeline() as pipe, anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker, pipe, len(commands) // 8)
        pipelined = time.perf_counter() - started
        print(
            f"{len(commands)} queries: {one_by_one * 1e3:.1f} ms one by one, "
            f"{pipelined * 1e3:.1f} ms pipelined from 8 tasks ({len(answers)} answers)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("resource", nargs="?", help="a HiSLIP resource (default: simulator)")
    parser.add_argument("--ca", help="CA bundle (PEM) that signed the instrument's certificate")
    parser.add_argument("--user", help="SASL user name (the password is asked for)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    options: dict[str, Any] = {"overlapped": True, "timeout": 5}
    if args.ca:
        options["tls_ca_file"] = args.ca
    if args.user:
        options.update(username=args.user, password=getpass.getpass("password: "))
    anyio.run(main, args.resource, options, backend=args.backend)
