"""SASL mechanisms against the RFC test vectors, and client against server."""

from __future__ import annotations

import pytest

from aiotmc.protocol import sasl

# RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil"
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_sha256_rfc7677_vector() -> None:
    client = sasl.ScramSha256(sasl.Credentials("user", "pencil"), nonce=CLIENT_NONCE)
    assert client.respond(None) == b"n,,n=user,r=" + CLIENT_NONCE.encode()
    assert client.respond(SERVER_FIRST) == CLIENT_FINAL
    client.verify_final(SERVER_FINAL)
    with pytest.raises(sasl.SaslError, match="signature"):
        client.verify_final(b"v=" + b"A" * 43 + b"=")


def test_scram_refuses_a_nonce_it_did_not_start() -> None:
    client = sasl.ScramSha256(sasl.Credentials("user", "pencil"), nonce=CLIENT_NONCE)
    client.respond(None)
    with pytest.raises(sasl.SaslError, match="nonce"):
        client.respond(b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_scram_refuses_absurd_iteration_counts() -> None:
    client = sasl.ScramSha256(sasl.Credentials("user", "pencil"), nonce="abc")
    client.respond(None)
    with pytest.raises(sasl.SaslError, match="iteration"):
        client.respond(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999999")


@pytest.mark.parametrize(("password", "ok"), [("pw,=1", True), ("wrong", False)])
def test_scram_client_against_server(password: str, ok: bool) -> None:
    users = {"a,b=c": "pw,=1"}
    client = sasl.ScramSha256(sasl.Credentials("a,b=c", password))
    server = sasl.ScramServer(users)
    first = client.respond(None)
    assert b"n=a=2Cb=3Dc," in first  # names are escaped
    outcome = server.final(client.respond(server.first(first)))
    if not ok:
        assert outcome is None
        return
    assert outcome is not None
    user, final = outcome
    assert user == "a,b=c"
    client.verify_final(final)


def test_plain_and_anonymous() -> None:
    credentials = sasl.Credentials("tim", "tanstaaftanstaaf")
    message = sasl.Plain(credentials).respond(None)
    assert message == b"\0tim\0tanstaaftanstaaf"  # RFC 4616 §4
    assert sasl.verify_plain(message, {"tim": "tanstaaftanstaaf"}) == "tim"
    assert sasl.verify_plain(message, {"tim": "other"}) is None
    assert sasl.verify_plain(b"junk", {"tim": "x"}) is None
    assert sasl.Anonymous("trace").respond(None) == b"trace"


def test_passwords_never_in_repr() -> None:
    credentials = sasl.Credentials("tim", "hunter2")
    for shown in (repr(credentials), str(credentials), repr(sasl.Plain(credentials))):
        assert "hunter2" not in shown and "tim" in shown
    assert repr(sasl.ScramSha256(credentials)).count("hunter2") == 0


def test_saslprep() -> None:
    assert sasl.saslprep("I\u00adX") == "IX"  # RFC 4013 §3 examples
    assert sasl.saslprep("\u00aa") == "a"
    assert sasl.saslprep("\u2168") == "IX"
    with pytest.raises(sasl.SaslError):
        sasl.saslprep("\u0007")


def test_choose() -> None:
    credentials = sasl.Credentials("u", "p")
    offered = ["PLAIN", "SCRAM-SHA-256", "ANONYMOUS"]
    assert sasl.choose(offered, credentials, None) == "SCRAM-SHA-256"
    assert sasl.choose(["PLAIN"], credentials, None) == "PLAIN"
    assert sasl.choose(offered, None, None) == "ANONYMOUS"
    assert sasl.choose(offered, credentials, "plain") == "PLAIN"
    with pytest.raises(sasl.SaslError, match="credentials"):
        sasl.choose(["PLAIN"], None, None)
    with pytest.raises(sasl.SaslError, match="offer"):
        sasl.choose(["PLAIN"], credentials, "SCRAM-SHA-256")
