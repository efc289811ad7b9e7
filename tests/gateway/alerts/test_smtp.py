"""The e-mail notifier against a real SMTP server (aiosmtpd on 127.0.0.1): plain relay,
STARTTLS with a login (certificate from a throwaway CA), temporary and permanent refusals."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from aiotmc.gateway.alerts import EmailNotifier, NotifierOptions
from aiotmc.gateway.model import Alert, AlertState

from ..sinks.pgcluster import free_port


class Inbox:
    """aiosmtpd handler: keeps every message; answers DATA from ``answers`` first."""

    def __init__(self, answers: list[str] | None = None) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.answers = list(answers or [])

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.answers:
            return self.answers.pop(0)
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((envelope, message))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"gw", b"s3cret")
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def alert(state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        "hot",
        "psu",
        "volt",
        state,
        "critical",
        "psu/volt = 12 V (above 10)",
        1_800_000_000.0,
        12.0,
        {"site": "lab", "host": "bench"},
    )


def options(**kw: Any) -> NotifierOptions:
    return NotifierOptions(**{"name": "mail", "retry_delay": 0.01, "timeout": 5, **kw})


async def test_an_alert_arrives_by_mail(inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    mailer = EmailNotifier(
        "127.0.0.1",
        port=port,
        tls="none",
        sender="gw@lab.example",
        recipients=["ops@lab.example", "me@lab.example"],
        options=options(),
    )
    assert await mailer.notify(alert(), 1_799_999_990.0)
    assert await mailer.notify(alert(AlertState.RESOLVED), 1_799_999_990.0)
    (envelope, fired), (_, resolved) = handler.messages
    assert envelope.mail_from == "gw@lab.example"
    assert envelope.rcpt_tos == ["ops@lab.example", "me@lab.example"]
    assert fired["Subject"] == "[aiotmc] [FIRING] hot psu/volt"
    assert resolved["Subject"] == "[aiotmc] [RESOLVED] hot psu/volt"
    body = fired.get_content().replace("\r\n", "\n")  # as sent on the wire: CRLF
    assert body.startswith("psu/volt = 12 V (above 10)\n")
    for line in ("state:    firing (critical)", "value:    12.0", "site: lab", "alertname: hot"):
        assert line in body
    assert "resolved: 2027-01-15 08:00:00 UTC" in resolved.get_content()
    assert mailer.sent == 2


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[tuple[Inbox, int, str]]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = Inbox()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield handler, controller.port, str(ca_file)
    finally:
        controller.stop()


async def test_starttls_and_login(tls_inbox: tuple[Inbox, int, str]) -> None:
    handler, port, ca_file = tls_inbox
    good = EmailNotifier(
        "127.0.0.1",
        port=port,
        tls="starttls",
        ca_file=ca_file,
        username="gw",
        password="s3cret",
        sender="gw@lab.example",
        recipients=["ops@lab.example"],
        options=options(),
    )
    assert await good.notify(alert(), 1.0)
    assert len(handler.messages) == 1
    wrong = EmailNotifier(
        "127.0.0.1",
        port=port,
        tls="starttls",
        ca_file=ca_file,
        username="gw",
        password="guess",
        sender="gw@lab.example",
        recipients=["ops@lab.example"],
        options=options(retries=3),
    )
    assert not await wrong.notify(alert(), 1.0)  # 535: not retried
    untrusted = EmailNotifier(
        "127.0.0.1",
        port=port,
        tls="starttls",
        username="gw",
        password="s3cret",
        sender="gw@lab.example",
        recipients=["ops@lab.example"],
        options=options(retries=0),
    )
    assert not await untrusted.notify(alert(), 1.0)  # the certificate is verified
    assert (wrong.failed, untrusted.failed, len(handler.messages)) == (1, 1, 1)


async def test_temporary_refusals_are_retried(
    inbox: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    handler, port = inbox
    handler.answers = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
    mailer = EmailNotifier(
        "127.0.0.1",
        port=port,
        tls="none",
        sender="a@x",
        recipients=["b@x"],
        options=options(retries=2),
    )
    assert await mailer.notify(alert(), 1.0)
    assert (len(handler.messages), mailer.sent, mailer.failed) == (1, 1, 0)
    assert caplog.text.count("SMTP 451") == 2
    handler.answers = ["554 5.6.0 no thanks"]
    assert not await mailer.notify(alert(), 1.0)
    assert (len(handler.messages), mailer.failed) == (1, 1)


async def test_no_server_is_retried_then_given_up() -> None:
    mailer = EmailNotifier(
        "127.0.0.1",
        port=free_port(),
        tls="none",
        sender="a@x",
        recipients=["b@x"],
        options=options(retries=1),
    )
    assert not await mailer.notify(alert(), 1.0)
    assert mailer.failed == 1
