"""Passwords, sessions, the login limiter and the guard's parsing, on their own."""

from __future__ import annotations

import io

import pytest

from aiotmc.gateway.web.guard import host_name
from aiotmc.gateway.web.passwords import (
    check_hash,
    hash_password,
    hash_password_main,
    verify_password,
)
from aiotmc.gateway.web.ratelimit import LoginLimiter, client_key
from aiotmc.gateway.web.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hash_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$") and check_hash(hashed) is None
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not a hash", "x")
    assert not verify_password(hashed, "x" * 5000)  # never hashes an unbounded input
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_hash_password_command_reads_stdin() -> None:
    out = io.StringIO()
    assert hash_password_main([], stdin=io.StringIO("s3cret\n"), stdout=out) == 0
    printed = out.getvalue().strip()
    assert check_hash(printed) is None and verify_password(printed, "s3cret")
    assert hash_password_main(["--bogus"], stdout=io.StringIO()) == 2
    assert hash_password_main([], stdin=io.StringIO("\n"), stdout=io.StringIO()) == 1


def test_sessions_expire_end_and_stay_bounded() -> None:
    clock = Clock()
    store = SessionStore(ttl=60, max_sessions=3, clock=clock)
    first = store.create("ann")
    session = store.get(first)
    assert session is not None and session.user == "ann"
    assert store.get(first + "x") is None and store.get("") is None and store.get(None) is None
    assert store.get("a" * 500) is None
    clock.now += 61
    assert store.get(first) is None and len(store) == 0
    tokens = [store.create(f"u{i}") for i in range(5)]
    assert len(store) == 3  # the oldest two were evicted
    assert store.get(tokens[0]) is None and store.get(tokens[4]) is not None
    store.end(tokens[4])
    assert store.get(tokens[4]) is None
    store.end_user("u3")
    assert len(store) == 1
    # another process (another key) cannot mint tokens for this one
    assert SessionStore(ttl=60).get(tokens[2]) is None


def test_login_limiter_windows_and_bounded_memory() -> None:
    clock = Clock()
    limiter = LoginLimiter(attempts=2, window=10, max_clients=100, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert limiter.retry_after("10.0.0.1") == 10
    assert limiter.allow("10.0.0.2")
    clock.now += 10
    assert limiter.allow("10.0.0.1") and limiter.retry_after("10.0.0.1") == 0
    for i in range(1000):
        limiter.allow(f"192.0.2.{i % 250}:{i}")
    assert len(limiter) == 100


def test_ipv6_clients_count_per_64() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key(None) == "?"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LocalHost:8080", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("gw.example.org.", "gw.example.org"),
        ("evil.example:80@localhost", "evil.example"),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name
