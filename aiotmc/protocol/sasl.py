"""SASL mechanisms, sans-IO: ANONYMOUS (RFC 4505), PLAIN (RFC 4616), SCRAM-SHA-256
(RFC 5802 / 7677), client and server side.

Written against the RFCs with the standard library only (``hashlib.pbkdf2_hmac``,
``hmac``); no maintained SASL library covers both sides without pulling in a framework.
A client mechanism answers challenges with :meth:`ClientMechanism.respond` and checks
the server's final data with :meth:`ClientMechanism.verify_final` (SCRAM: the server
proves it knows the password too). Passwords never appear in ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections.abc import Mapping
from typing import Final, Protocol

from .._exceptions import ProtocolError

__all__ = [
    "MECHANISMS",
    "Anonymous",
    "ClientMechanism",
    "Credentials",
    "Plain",
    "SaslError",
    "ScramServer",
    "ScramSha256",
    "choose",
    "saslprep",
    "verify_plain",
]

MECHANISMS: Final = ("SCRAM-SHA-256", "PLAIN", "ANONYMOUS")  #: ours, best first
_ITERATIONS: Final = 4096
_GS2: Final = b"n,,"


class SaslError(ProtocolError):
    """A malformed or failed SASL exchange (the caller turns it into an auth error)."""


class Credentials:
    """A user name and password; ``repr`` and ``str`` never show the password."""

    __slots__ = ("_password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password

    @property
    def password(self) -> str:
        """The password (read it only to authenticate)."""
        return self._password

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Credentials)
            and self.username == other.username
            and hmac.compare_digest(self._password.encode(), other._password.encode())
        )

    def __hash__(self) -> int:
        return hash(self.username)


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013): map, normalize (NFKC), refuse prohibited characters."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    for c in normal:
        if (
            stringprep.in_table_c12(c)
            or stringprep.in_table_c21_c22(c)
            or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c)
            or stringprep.in_table_c5(c)
            or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c)
            or stringprep.in_table_c8(c)
            or stringprep.in_table_c9(c)
            or stringprep.in_table_a1(c)
        ):
            raise SaslError(f"character U+{ord(c):04X} is not allowed in SASL strings")
    return normal


class ClientMechanism(Protocol):
    """One client side of a SASL exchange."""

    name: str

    def respond(self, challenge: bytes | None) -> bytes:
        """The next message: the initial response for ``None``, else the answer."""
        ...

    def verify_final(self, data: bytes) -> None:
        """Check the server's additional data on success (raise :class:`SaslError`)."""
        ...


class Anonymous:
    """ANONYMOUS: an optional trace string, no credentials."""

    name = "ANONYMOUS"

    def __init__(self, trace: str = "") -> None:
        self.trace = trace

    def respond(self, challenge: bytes | None) -> bytes:
        if challenge is not None:
            raise SaslError("ANONYMOUS takes no challenge")
        return self.trace.encode("utf-8")

    def verify_final(self, data: bytes) -> None:
        return None


class Plain:
    """PLAIN: ``authzid NUL authcid NUL passwd`` in one message (only over TLS)."""

    name = "PLAIN"

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def respond(self, challenge: bytes | None) -> bytes:
        if challenge is not None:
            raise SaslError("PLAIN takes no challenge")
        user = saslprep(self._credentials.username).encode("utf-8")
        password = saslprep(self._credentials.password).encode("utf-8")
        return b"\0" + user + b"\0" + password

    def verify_final(self, data: bytes) -> None:
        return None

    def __repr__(self) -> str:
        return f"Plain({self._credentials!r})"


def verify_plain(message: bytes, users: Mapping[str, str]) -> str | None:
    """Server side of PLAIN: the authenticated user name, or None."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        return None
    authzid, user_bytes, password = parts
    try:
        user = saslprep(user_bytes.decode("utf-8"))
        given = saslprep(password.decode("utf-8")).encode("utf-8")
    except (UnicodeDecodeError, SaslError):
        return None
    expected = users.get(user)
    if expected is None or authzid not in (b"", user_bytes):
        return None
    if not hmac.compare_digest(given, saslprep(expected).encode("utf-8")):
        return None
    return user


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


def _attributes(message: bytes) -> dict[str, str]:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("SCRAM message is not UTF-8") from None
    found: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise SaslError(f"malformed SCRAM attribute {part[:20]!r}")
        found.setdefault(part[0], part[2:])
    return found


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SaslError("bad base64 in a SCRAM message") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)


def _keys(salted: bytes) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) from SaltedPassword (RFC 5802 §3)."""
    client_key = _hmac(salted, b"Client Key")
    return hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")


class ScramSha256:
    """SCRAM-SHA-256 client, without channel binding (``n,,``)."""

    name = "SCRAM-SHA-256"

    def __init__(self, credentials: Credentials, *, nonce: str | None = None) -> None:
        self._credentials = credentials
        self._nonce = nonce or secrets.token_urlsafe(18)
        self._first_bare = ""
        self._server_signature: bytes | None = None
        self._step = 0

    def respond(self, challenge: bytes | None) -> bytes:
        if challenge is None:
            if self._step != 0:
                raise SaslError("SCRAM exchange already started")
            self._step = 1
            user = _escape(saslprep(self._credentials.username))
            self._first_bare = f"n={user},r={self._nonce}"
            return _GS2 + self._first_bare.encode("utf-8")
        if self._step != 1:
            raise SaslError("unexpected SCRAM challenge")
        self._step = 2
        attrs = _attributes(challenge)
        if "m" in attrs:
            raise SaslError("SCRAM extension required by the server is not supported")
        nonce, salt_text, count = attrs.get("r"), attrs.get("s"), attrs.get("i")
        if nonce is None or salt_text is None or count is None:
            raise SaslError("SCRAM server-first-message lacks r, s or i")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("SCRAM server nonce does not extend ours")
        if not count.isdigit() or not 0 < int(count) <= 1_000_000:
            raise SaslError(f"SCRAM iteration count out of range: {count[:12]!r}")
        salted = _salted(self._credentials.password, _unb64(salt_text), int(count))
        without_proof = f"c={_b64(_GS2)},r={nonce}"
        auth = f"{self._first_bare},{challenge.decode('utf-8')},{without_proof}".encode()
        client_key = _hmac(salted, b"Client Key")
        stored, server_key = hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        signature = _hmac(stored, auth)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(server_key, auth)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_final(self, data: bytes) -> None:
        attrs = _attributes(data)
        if "e" in attrs:
            raise SaslError(f"SCRAM server error: {attrs['e'][:80]}")
        expected = self._server_signature
        if expected is None or not hmac.compare_digest(_unb64(attrs.get("v", "")), expected):
            raise SaslError("the server's SCRAM signature is wrong: it does not know the password")

    def __repr__(self) -> str:
        return f"ScramSha256({self._credentials!r})"


class ScramServer:
    """Server side of SCRAM-SHA-256 over a user table (for the simulator and tests)."""

    def __init__(
        self, users: Mapping[str, str], *, nonce: str | None = None, salt: bytes | None = None
    ) -> None:
        self._users = users
        self._nonce = nonce or secrets.token_urlsafe(18)
        self._salt = salt or secrets.token_bytes(16)
        self._first_bare = ""
        self._server_first = ""
        self._user: str | None = None
        self._step = 0

    @property
    def started(self) -> bool:
        """The client-first-message was answered."""
        return self._step > 0

    def first(self, message: bytes) -> bytes:
        """Answer the client-first-message with the server-first-message."""
        if self._step != 0 or not message.startswith(_GS2):
            raise SaslError("SCRAM client-first-message must start with 'n,,'")
        self._step = 1
        self._first_bare = message[len(_GS2) :].decode("utf-8", "replace")
        attrs = _attributes(message[len(_GS2) :])
        user, nonce = attrs.get("n"), attrs.get("r")
        if user is None or not nonce:
            raise SaslError("SCRAM client-first-message lacks n or r")
        self._user = _unescape(user)
        self._nonce = nonce + self._nonce
        self._server_first = f"r={self._nonce},s={_b64(self._salt)},i={_ITERATIONS}"
        return self._server_first.encode("ascii")

    def final(self, message: bytes) -> tuple[str, bytes] | None:
        """Check the client-final-message: (user, server-final-message), or None."""
        if self._step != 1:
            raise SaslError("SCRAM client-final-message out of order")
        self._step = 2
        attrs = _attributes(message)
        proof_text = attrs.get("p")
        if attrs.get("r") != self._nonce or proof_text is None or attrs.get("c") != _b64(_GS2):
            return None
        password = self._users.get(self._user or "")
        if password is None or self._user is None:
            return None
        without_proof = message[: message.rfind(b",p=")].decode("utf-8")
        auth = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        stored, server_key = _keys(_salted(password, self._salt, _ITERATIONS))
        signature = _hmac(stored, auth)
        proof = _unb64(proof_text)
        if len(proof) != len(signature):
            return None
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), stored):
            return None
        return self._user, f"v={_b64(_hmac(server_key, auth))}".encode("ascii")


def choose(offered: list[str], credentials: Credentials | None, wanted: str | None) -> str:
    """The mechanism to use: ``wanted`` if given, else our best one the server offers
    (ANONYMOUS only without credentials). Raises :class:`SaslError` if none fits."""
    upper = [m.upper() for m in offered]
    if wanted is not None:
        if wanted.upper() not in upper:
            raise SaslError(f"the server does not offer SASL {wanted} (it offers {offered})")
        return wanted.upper()
    candidates = ("SCRAM-SHA-256", "PLAIN") if credentials is not None else ("ANONYMOUS",)
    for name in candidates:
        if name in upper:
            return name
    need = "credentials" if credentials is None else "a mechanism we support"
    raise SaslError(f"no usable SASL mechanism: the server offers {offered}, it needs {need}")
