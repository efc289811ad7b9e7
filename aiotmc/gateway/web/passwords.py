"""Password hashes for ``[[users]]``: argon2id (argon2-cffi), PHC strings.

``python -m aiotmc.gateway.web.passwords`` asks for a password twice (or reads one line
from standard input when it is not a terminal) and prints its hash, ready for
``password_hash = "..."``. :func:`hash_password_main` is the same for ``aiotmc gateway
hash-password``.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["check_hash", "hash_password", "hash_password_main", "verify_password"]

#: Never hash more than this: argon2 itself takes any length, the web form must not.
MAX_PASSWORD_LENGTH = 1024


#: argon2-cffi's defaults: RFC 9106's low-memory profile (argon2id, t=3, m=64 MiB, p=4).
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id PHC string of ``password`` (``$argon2id$v=19$m=...``)."""
    if not password:
        raise ValueError("empty password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password longer than {MAX_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def check_hash(password_hash: str) -> str | None:
    """None if ``password_hash`` is an argon2 PHC string, else what is wrong with it."""
    if not password_hash.startswith("$argon2"):
        return "not an argon2 hash: expected a PHC string starting with $argon2id$"
    try:
        parameters = extract_parameters(password_hash)
    except (InvalidHashError, ValueError) as exc:
        return f"malformed argon2 hash ({exc or 'bad format'})"
    if parameters.type is not Type.ID:
        return f"argon2{parameters.type.name.lower()} hash: use argon2id"
    return None


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (blocking: run it in a thread)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_password_main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Print the hash of a password read from the terminal (twice) or standard input."""
    source = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    if argv:
        sys.stderr.write("usage: python -m aiotmc.gateway.web.passwords  (reads the password)\n")
        return 2
    if source.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            sys.stderr.write("the passwords differ\n")
            return 1
    else:
        password = source.readline().rstrip("\r\n")
    try:
        out.write(hash_password(password) + "\n")
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(hash_password_main(sys.argv[1:]))
