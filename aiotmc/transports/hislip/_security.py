"""HiSLIP 2.0 security for the client: when to encrypt, how to verify, how to log in.

At connect, after AsyncInitialize: AsyncStartTLS / AsyncStartTLSResponse, TLS on the
asynchronous channel, StartTLS, TLS on the synchronous channel, then SASL client
authentication on the (encrypted) synchronous channel: GetSaslMechanismList,
AuthenticationStart, AuthenticationExchange until AuthenticationResult. Every failure is
an :class:`~aiotmc.AuthenticationError` (no retry: wrong credentials stay wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..._exceptions import AuthenticationError
from ..._hislip_wire import Channel
from ...protocol import hislip as hs
from ...protocol import sasl
from ...protocol.hislip import MessageType as T

__all__ = ["Security", "authenticate", "secure_session", "security_from_options"]

SECURE_CONNECTION_SUPPORTED: Final = 0x01  #: AsyncInitializeResponse control bit (2.0)
_START_OK: Final = 1  #: AsyncStartTLSResponse: success
_RESULT_SUCCESS: Final = 0x02  #: AuthenticationResult control bit
_MAX_ROUNDS: Final = 8  #: AuthenticationExchange messages we answer at most
_U32: Final = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Security:
    """What the user asked for. ``repr`` never shows the password."""

    tls: bool | None = None  #: True: require; False: refuse; None: when needed
    ca_file: str | None = None
    fingerprint: bytes | None = None  #: SHA-256 of the server's certificate (DER)
    insecure: bool = False
    context: ssl.SSLContext | None = None
    server_name: str | None = None
    credentials: sasl.Credentials | None = None
    mechanism: str | None = None

    @property
    def wanted(self) -> bool:
        """Encryption is required from our side (asked for, or credentials to send)."""
        return self.tls is True or self.credentials is not None

    def ssl_context(self) -> ssl.SSLContext:
        """The client context: verification on unless pinned or explicitly insecure."""
        if self.context is not None:
            return self.context
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure or (self.fingerprint is not None and self.ca_file is None):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def check_pin(self, tls: ssl.SSLObject, channel: str) -> None:
        """The certificate matches the pinned fingerprint (if one is pinned)."""
        if self.fingerprint is None:
            return
        der = tls.getpeercert(binary_form=True) or b""
        if not hmac.compare_digest(hashlib.sha256(der).digest(), self.fingerprint):
            raise AuthenticationError(
                f"HiSLIP {channel} channel: the server's certificate does not match the "
                "pinned SHA-256 fingerprint"
            )


def _fingerprint(text: str) -> bytes:
    digits = text.replace(":", "").replace(" ", "").lower()
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ValueError(f"tls_fingerprint must be a SHA-256 digest in hex, got {text!r}")
    return value


def security_from_options(options: Mapping[str, Any]) -> Security:
    """Build :class:`Security` from ``aiotmc.open`` keyword options."""
    username, password = options.get("username"), options.get("password")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    tls = options.get("tls")
    credentials = None if username is None else sasl.Credentials(str(username), str(password))
    if tls is False and credentials is not None:
        raise ValueError("credentials are sent only over TLS: drop tls=False")
    pin = options.get("tls_fingerprint")
    return Security(
        tls=None if tls is None else bool(tls),
        ca_file=options.get("tls_ca_file"),
        fingerprint=None if pin is None else _fingerprint(str(pin)),
        insecure=bool(options.get("tls_insecure", False)),
        context=options.get("tls_context"),
        server_name=options.get("tls_server_name"),
        credentials=credentials,
        mechanism=options.get("sasl_mechanism"),
    )


async def secure_session(
    sync: Channel,
    async_: Channel,
    security: Security,
    *,
    host: str,
    resource: str,
    features: hs.Feature,
    version: tuple[int, int],
    async_control: int,
    deadline: float = math.inf,
) -> bool:
    """Encrypt and authenticate the session if either side requires it; True if done."""
    demanded = bool(features & (hs.Feature.ENCRYPTION | hs.Feature.INITIAL_ENCRYPTION))
    if security.tls is False:
        if demanded:
            raise AuthenticationError(
                f"{resource}: the server demands an encrypted session and tls=False refuses it"
            )
        return False
    if not (demanded or security.wanted):
        return False
    if version < (2, 0) or not async_control & SECURE_CONNECTION_SUPPORTED:
        raise AuthenticationError(
            f"{resource}: encryption is required but the server cannot encrypt "
            f"(HiSLIP {version[0]}.{version[1]}, secure connection "
            f"{'supported' if async_control & 1 else 'not supported'})"
        )
    context = security.ssl_context()
    name = security.server_name or host
    payload = _U32.pack(hs.NO_MESSAGE_ID)  # the last MessageID received: none yet
    await async_.send([hs.encode(T.AsyncStartTLS, 0, hs.NO_MESSAGE_ID, payload)], deadline)
    reply = await async_.receive()
    _raise_auth(reply, resource)
    if reply.type != T.AsyncStartTLSResponse or reply.control != _START_OK:
        raise AuthenticationError(
            f"{resource}: the server refused AsyncStartTLS (type {reply.type}, "
            f"code {reply.control})"
        )
    tls = await async_.start_tls(context, server_hostname=name, deadline=deadline)
    security.check_pin(tls, "asynchronous")
    await sync.send([hs.encode(T.StartTLS)], deadline)
    tls = await sync.start_tls(context, server_hostname=name, deadline=deadline)
    security.check_pin(tls, "synchronous")
    await authenticate(sync, security, resource, deadline)
    return True


async def authenticate(sync: Channel, security: Security, resource: str, deadline: float) -> None:
    """SASL over the synchronous channel (a server without it is fine without credentials)."""
    await sync.send([hs.encode(T.GetSaslMechanismList)], deadline)
    reply = await sync.receive()
    if reply.type == T.Error and security.credentials is None:
        return  # no client authentication on this server
    _raise_auth(reply, resource)
    if reply.type != T.GetSaslMechanismListResponse:
        raise AuthenticationError(f"{resource}: expected the SASL mechanism list, got {reply.type}")
    offered = reply.payload.decode("ascii", "replace").split()
    try:
        name = sasl.choose(offered, security.credentials, security.mechanism)
    except sasl.SaslError as exc:
        raise AuthenticationError(f"{resource}: {exc}") from None
    mechanism = _mechanism(name, security)
    await sync.send([hs.encode(T.AuthenticationStart, 0, 0, name.encode("ascii"))], deadline)
    try:
        answer = mechanism.respond(None)
        for _ in range(_MAX_ROUNDS):
            await sync.send([hs.encode(T.AuthenticationExchange, 0, 0, answer)], deadline)
            reply = await sync.receive()
            _raise_auth(reply, resource)
            if reply.type == T.AuthenticationResult:
                if not reply.control & _RESULT_SUCCESS:
                    who = "" if security.credentials is None else " for that user"
                    raise AuthenticationError(
                        f"{resource}: SASL {name} authentication failed{who} "
                        f"(server code {reply.param})"
                    )
                mechanism.verify_final(reply.payload)
                return
            if reply.type != T.AuthenticationExchange:
                raise AuthenticationError(f"{resource}: unexpected message {reply.type} in SASL")
            answer = mechanism.respond(reply.payload)
    except sasl.SaslError as exc:
        raise AuthenticationError(f"{resource}: SASL {name}: {exc}") from None
    raise AuthenticationError(f"{resource}: SASL {name} did not finish in {_MAX_ROUNDS} rounds")


def _mechanism(name: str, security: Security) -> sasl.ClientMechanism:
    credentials = security.credentials
    if name == "ANONYMOUS":
        return sasl.Anonymous()
    if credentials is None:
        raise AuthenticationError(f"SASL {name} needs a username and password")
    if name == "PLAIN":
        return sasl.Plain(credentials)
    if name == "SCRAM-SHA-256":
        return sasl.ScramSha256(credentials)
    raise AuthenticationError(f"SASL {name} is not supported (only {', '.join(sasl.MECHANISMS)})")


def _raise_auth(message: hs.Message, resource: str) -> None:
    try:
        hs.raise_if_error(message)
    except hs.HislipError as exc:
        raise AuthenticationError(f"{resource}: {exc}") from exc
