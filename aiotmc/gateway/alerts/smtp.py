"""Alert notifications by e-mail (SMTP).

The stdlib ``smtplib`` runs in a worker thread: no extra dependency, the same code on
asyncio and trio, and alert mail is rare enough that a thread per message costs
nothing. ``tls`` is ``"starttls"`` (upgrade on port 587), ``"ssl"`` (implicit TLS, port
465) or ``"none"`` (a relay on a trusted network, port 25); certificates are verified
(``ca_file`` adds a private CA). ``username``/``password`` log in (only over TLS, unless
``allow_plain_auth``). A 4xx answer, a lost connection or a timeout is retried; a 5xx
answer (recipient refused, authentication failed) is not.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import anyio.to_thread

from ..._exceptions import ConfigError
from ..fields import Fields, Key
from ..model import Alert, AlertState
from .notifier import DeliveryError, Notifier, NotifierOptions, labels_of

__all__ = ["EmailNotifier"]

_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


class EmailNotifier(Notifier):
    """Mail alerts from ``sender`` to ``recipients`` through the SMTP server ``host``."""

    def __init__(
        self,
        host: str,
        *,
        sender: str,
        recipients: Sequence[str],
        options: NotifierOptions | None = None,
        port: int | None = None,
        tls: str = "starttls",
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        allow_plain_auth: bool = False,
        subject_prefix: str = "[aiotmc]",
    ) -> None:
        if tls not in _PORTS:
            raise ValueError(f"tls must be one of {', '.join(_PORTS)}, got {tls!r}")
        if not recipients:
            raise ValueError("needs at least one recipient")
        if username is not None and tls == "none" and not allow_plain_auth:
            raise ValueError("a login without TLS sends the password in clear text")
        super().__init__(options or NotifierOptions("email"))
        self.host = host
        self.port = port if port is not None else _PORTS[tls]
        self.tls = tls
        self.ca_file = ca_file
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self.password = password
        self.subject_prefix = subject_prefix

    def __repr__(self) -> str:
        return f"<EmailNotifier {self.name!r} {self.host}:{self.port} tls={self.tls}>"

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any], key: Key, *, config_dir: Path | None = None
    ) -> EmailNotifier:
        """``[[notifiers]] type = "email"`` (or ``"smtp"``): ``host``, ``from``, ``to``
        (required), ``port``, ``tls``, ``ca_file`` (relative to ``config_dir``),
        ``username``, ``password``, ``allow_plain_auth``, ``subject_prefix``, and the
        common notifier fields."""
        fields = Fields(section, key)
        fields.string("type", "email")
        host = fields.string("host")
        sender = fields.string("from")
        recipients = fields.strings("to")
        tls = fields.string("tls", "starttls", choices=tuple(_PORTS))
        options: dict[str, Any] = {
            "port": fields.integer("port", None, minimum=1, maximum=65535),
            "ca_file": fields.string("ca_file", None),
            "username": fields.string("username", None),
            "password": fields.string("password", None),
            "allow_plain_auth": fields.boolean("allow_plain_auth", False),
            "subject_prefix": fields.string("subject_prefix", "[aiotmc]"),
        }
        common = NotifierOptions.read(fields, "email")
        fields.done()
        if options["ca_file"] is not None and config_dir is not None:
            options["ca_file"] = str(config_dir / Path(options["ca_file"]).expanduser())
        if not recipients:
            raise ConfigError("needs at least one recipient", key=fields.at("to"))
        if (options["username"] is None) != (options["password"] is None):
            raise ConfigError("username and password go together", key=fields.at("password"))
        try:
            return cls(
                host, sender=sender, recipients=recipients, options=common, tls=tls, **options
            )
        except ValueError as exc:
            raise ConfigError(str(exc), key=fields.at("username")) from exc

    def message(self, alert: Alert, started: float) -> EmailMessage:
        """The mail for one alert."""
        state = "RESOLVED" if alert.state is AlertState.RESOLVED else "FIRING"
        where = alert.instrument + (f"/{alert.channel}" if alert.channel else "")
        msg = EmailMessage()
        msg["Subject"] = f"{self.subject_prefix} [{state}] {alert.rule} {where}".strip()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = format_datetime(dt.datetime.fromtimestamp(alert.timestamp, dt.UTC))
        msg["Message-ID"] = make_msgid(domain="aiotmc.gateway")
        lines = [
            alert.summary,
            "",
            f"state:    {state.lower()} ({alert.severity})",
            f"since:    {dt.datetime.fromtimestamp(started, dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        ]
        if alert.state is AlertState.RESOLVED:
            end = dt.datetime.fromtimestamp(alert.timestamp, dt.UTC)
            lines.append(f"resolved: {end:%Y-%m-%d %H:%M:%S} UTC")
        if alert.value is not None:
            lines.append(f"value:    {alert.value}")
        lines += ["", *(f"{k}: {v}" for k, v in sorted(labels_of(alert).items()))]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    async def deliver(self, alert: Alert, started: float) -> None:
        msg = self.message(alert, started)
        # abandon_on_cancel: shutting down does not wait for a slow server; the thread
        # ends on its own within the socket timeout.
        await anyio.to_thread.run_sync(self._send, msg, abandon_on_cancel=True)

    def _send(self, msg: EmailMessage) -> None:
        timeout = self.options.timeout
        context = ssl.create_default_context(cafile=self.ca_file)
        try:
            smtp: smtplib.SMTP
            if self.tls == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
            with smtp:
                if self.tls == "starttls":
                    smtp.starttls(context=context)
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(msg, self.sender, list(self.recipients))
        except smtplib.SMTPResponseException as exc:
            retry = 400 <= exc.smtp_code < 500
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(f"SMTP {exc.smtp_code}: {text}", retry=retry) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            retry = all(400 <= code < 500 for code in codes)
            raise DeliveryError(f"recipients refused: {exc.recipients}", retry=retry) from exc
        except (smtplib.SMTPException, OSError) as exc:  # lost connection, TLS, timeout
            raise DeliveryError(f"{self.host}:{self.port}: {exc}", retry=True) from exc
