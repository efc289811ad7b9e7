"""HiSLIP 2.0 security end to end: StartTLS on both channels with a throwaway CA, pinning,
the insecure opt-out, SASL (SCRAM-SHA-256, PLAIN, ANONYMOUS) against the simulator's user
table, and every refusal as a typed AuthenticationError without a retry."""

from __future__ import annotations

import hashlib
import logging
import ssl

import anyio
import pytest

import aiotmc
from aiotmc.sim.hislip_server import HislipServer
from aiotmc.testing import conformance_device

from .conftest import Pki

USERS = {"alice": "correct horse", "bob": "s3cret,=x"}


async def test_tls_with_ca_file_encrypts_both_channels(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls=True, tls_ca_file=pki.ca_file) as inst:
                assert await inst.query("ECHO? 1") == "1"
                assert await inst.read_stb() & 0x10 == 0
                await inst.clear()
                assert await inst.query("ECHO? 2") == "2"
                details = inst.transport.info.details
                assert details["encryption"].startswith("TLS"), details
                assert details["protocol_version"] == "2.0"
    assert server.counters["tls"] == 2, server.counters  # both channels


async def test_plain_by_default_when_the_server_does_not_demand(
    server_tls: tuple[ssl.SSLContext, bytes],
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource) as inst:
                assert await inst.query("ECHO? 3") == "3"
                assert inst.transport.info.details["encryption"] == "none"
    assert server.counters["tls"] == 0


async def test_a_server_demanding_encryption_gets_it(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context, require_tls=True) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls_ca_file=pki.ca_file) as inst:
                assert await inst.query("ECHO? 4") == "4"
            # verification is on by default: without the CA the certificate is refused
            with pytest.raises(aiotmc.AuthenticationError, match="certificate"):
                async with aiotmc.open(server.resource):
                    pass
            with pytest.raises(aiotmc.AuthenticationError, match="demands"):
                async with aiotmc.open(server.resource, tls=False):
                    pass


async def test_requiring_encryption_refuses_a_server_without_it() -> None:
    async with HislipServer(conformance_device()) as server:
        with anyio.fail_after(20), pytest.raises(aiotmc.AuthenticationError, match="cannot"):
            async with aiotmc.open(server.resource, tls=True):
                pass
        await server.wait_sessions(0)


async def test_pinning_and_insecure(pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]) -> None:
    context, der = server_tls
    pin = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    async with HislipServer(conformance_device(), tls=context) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls=True, tls_fingerprint=pin) as inst:
                assert await inst.query("ECHO? 5") == "5"
            wrong = "00" * 32
            with pytest.raises(aiotmc.AuthenticationError, match="pinned"):
                async with aiotmc.open(server.resource, tls=True, tls_fingerprint=wrong):
                    pass
            async with aiotmc.open(server.resource, tls=True, tls_insecure=True) as inst:
                assert await inst.query("ECHO? 6") == "6"


async def test_handshake_failure_wrong_host_name(pki: Pki) -> None:
    other = pki.server_context("instrument.example")
    async with HislipServer(conformance_device(), tls=other) as server:
        with anyio.fail_after(20), pytest.raises(aiotmc.AuthenticationError, match="certificate"):
            async with aiotmc.open(server.resource, tls=True, tls_ca_file=pki.ca_file):
                pass
        with anyio.fail_after(20):  # the name the certificate carries is accepted
            async with aiotmc.open(
                server.resource,
                tls=True,
                tls_ca_file=pki.ca_file,
                tls_server_name="instrument.example",
            ) as inst:
                assert await inst.query("ECHO? 7") == "7"
        assert server.counters["tls_failed"] >= 1


@pytest.mark.parametrize("mechanism", [None, "PLAIN", "SCRAM-SHA-256"])
async def test_sasl_login(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes], mechanism: str | None
) -> None:
    context, _ = server_tls
    extra = {} if mechanism is None else {"sasl_mechanism": mechanism}
    async with HislipServer(conformance_device(), tls=context, users=USERS) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(
                server.resource,
                tls_ca_file=pki.ca_file,
                username="bob",
                password=USERS["bob"],
                **extra,
            ) as inst:
                assert await inst.query("ECHO? 8") == "8"
    assert server.counters["auth_ok"] == 1
    assert server.counters["auth_failed"] == 0


async def test_wrong_credentials_are_one_typed_error_and_never_shown(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    context, _ = server_tls
    secret = "not-the-password-42"
    caplog.set_level(logging.DEBUG)
    async with HislipServer(conformance_device(), tls=context, users=USERS) as server:
        with anyio.fail_after(20):
            for mechanism in ("SCRAM-SHA-256", "PLAIN"):
                with pytest.raises(aiotmc.AuthenticationError) as caught:
                    async with aiotmc.open(
                        server.resource,
                        tls_ca_file=pki.ca_file,
                        username="alice",
                        password=secret,
                        sasl_mechanism=mechanism,
                    ):
                        pass
                assert secret not in repr(caught.value) and secret not in str(caught.value)
            with pytest.raises(aiotmc.AuthenticationError, match="credentials"):
                async with aiotmc.open(server.resource, tls=True, tls_ca_file=pki.ca_file):
                    pass  # the server has a user table: ANONYMOUS is not offered
            await server.wait_sessions(0)
    assert server.counters["auth_failed"] == 2  # one attempt each, no retry loop
    assert secret not in caplog.text


async def test_credentials_stay_out_of_repr(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context, users=USERS) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(
                server.resource, tls_ca_file=pki.ca_file, username="alice", password=USERS["alice"]
            ) as inst:
                link = inst.transport
                shown = repr(link._target) + repr(inst) + repr(link.info)  # type: ignore[attr-defined]
                assert "alice" in repr(link._target)  # type: ignore[attr-defined]
                assert USERS["alice"] not in shown


async def test_srq_and_locks_over_tls(pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context, users=USERS) as server:
        options = {"tls_ca_file": pki.ca_file, "username": "alice", "password": USERS["alice"]}
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, timeout=5, **options) as inst:
                async with inst.service_requests() as events:
                    await inst.write("*CLS;*ESE 1;*SRE 32;*OPC")
                    event = await events.receive()
                    assert int(event.status) & 0x60 == 0x60
                assert await inst.transport.lock(timeout=1)  # type: ignore[attr-defined]
                await inst.transport.unlock()  # type: ignore[attr-defined]
                await inst.reconnect()  # the new session is secured again
                assert await inst.query("ECHO? 9") == "9"
    assert server.counters["auth_ok"] == 2


async def test_end_tls_goes_back_to_plaintext(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls=True, tls_ca_file=pki.ca_file) as inst:
                link = inst.transport
                assert await inst.query("ECHO? a") == "a"
                await link.end_tls()  # type: ignore[attr-defined]
                assert link.info.details["encryption"] == "none"
                assert link._sync.tls is None and link._async.channel.tls is None  # type: ignore[attr-defined]
                assert await inst.query("ECHO? b") == "b"
                assert await inst.read_stb() & 0x10 == 0
                await inst.clear()
                async with inst.service_requests() as events:  # the async channel works
                    await inst.write("*CLS;*ESE 1;*SRE 32;*OPC")
                    assert int((await events.receive()).status) & 0x40
                assert await inst.query("ECHO? c") == "c"
    assert server.counters["tls_ended"] == 1, server.counters


async def test_end_tls_refused_while_required(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context, require_tls=True) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls_ca_file=pki.ca_file) as inst:
                with pytest.raises(aiotmc.RemoteProtocolError, match="refused EndTLS"):
                    await inst.transport.end_tls()  # type: ignore[attr-defined]
                assert inst.transport.info.details["encryption"].startswith("TLS")
                assert await inst.query("ECHO? d") == "d"


async def test_start_tls_in_a_running_session(
    pki: Pki, server_tls: tuple[ssl.SSLContext, bytes]
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context, users=USERS) as server:
        options = {"tls_ca_file": pki.ca_file, "username": "alice", "password": USERS["alice"]}
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, **options) as inst:
                link = inst.transport
                for round_ in range(2):  # encrypted, plain, encrypted again, ...
                    await link.end_tls()  # type: ignore[attr-defined]
                    assert link.info.details["encryption"] == "none"
                    assert await inst.query(f"ECHO? plain{round_}") == f"plain{round_}"
                    await link.start_tls()  # type: ignore[attr-defined]
                    assert link.info.details["encryption"].startswith("TLS")
                    assert await inst.query(f"ECHO? tls{round_}") == f"tls{round_}"
                    assert await inst.read_stb() & 0x10 == 0
    assert server.counters["tls"] == 6 and server.counters["auth_ok"] == 3, server.counters


async def test_start_tls_refused_by_a_plain_server() -> None:
    async with HislipServer(conformance_device()) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource) as inst:
                with pytest.raises(aiotmc.AuthenticationError, match="refused AsyncStartTLS"):
                    await inst.transport.start_tls()  # type: ignore[attr-defined]
                assert await inst.query("ECHO? still") == "still"  # the session goes on


async def test_start_tls_with_a_wrong_pin_breaks_the_session(
    server_tls: tuple[ssl.SSLContext, bytes],
) -> None:
    context, _ = server_tls
    async with HislipServer(conformance_device(), tls=context) as server:
        with anyio.fail_after(20):
            async with aiotmc.open(server.resource, tls_fingerprint="ab" * 32) as inst:
                with pytest.raises(aiotmc.AuthenticationError, match="pinned"):
                    await inst.transport.start_tls()  # type: ignore[attr-defined]
                with pytest.raises(aiotmc.SessionBrokenError):
                    await inst.query("ECHO? no")
