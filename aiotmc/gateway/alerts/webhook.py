"""Alert notifications to a webhook, in Alertmanager's webhook JSON (version 4), so that
receivers written for Alertmanager (chat bridges, paging services) take them as they are.

One POST per notification, one alert per message (the gateway does not group):
``status`` firing or resolved, ``labels`` (alertname, severity, instrument, channel, site,
host and the rule's labels), ``annotations.summary``, ``startsAt``/``endsAt`` (RFC 3339,
UTC) and a ``fingerprint`` of the labels. 2xx is delivered; connection errors, timeouts,
408, 429 and 5xx are retried; other answers are not (the receiver refuses the message).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from ..._exceptions import ConfigError
from ..fields import Fields, Key
from ..model import Alert, AlertState
from .notifier import DeliveryError, Notifier, NotifierOptions, labels_of

__all__ = ["WebhookNotifier", "alertmanager_payload", "fingerprint"]

#: Alertmanager's "not resolved yet" endsAt.
ZERO_TIME: Final = "0001-01-01T00:00:00Z"


def rfc3339(seconds: float) -> str:
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: Mapping[str, str]) -> str:
    """64-bit FNV-1a over the sorted label names and values (Alertmanager's scheme)."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _text(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def alertmanager_payload(
    alert: Alert, started: float, *, receiver: str, external_url: str = ""
) -> dict[str, Any]:
    """The webhook body for one alert that fired at ``started``."""
    labels = dict(labels_of(alert))
    annotations = {"summary": alert.summary}
    if alert.value is not None:
        annotations["value"] = _text(alert.value)
    status = "resolved" if alert.state is AlertState.RESOLVED else "firing"
    entry = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(started),
        "endsAt": rfc3339(alert.timestamp) if status == "resolved" else ZERO_TIME,
        "generatorURL": external_url,
        "fingerprint": fingerprint(labels),
    }
    group = {"alertname": alert.rule}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alert.rule}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [entry],
    }


class WebhookNotifier(Notifier):
    """POST alerts to ``url`` (extra ``headers``, e.g. ``Authorization``)."""

    def __init__(
        self,
        url: str,
        options: NotifierOptions | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        external_url: str = "",
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        super().__init__(options or NotifierOptions("webhook"))
        self.url = url
        #: Where it goes, for logs: a webhook URL's path or query often holds a secret.
        self.where = f"{parsed.scheme}://{parsed.hostname}" + (
            f":{parsed.port}" if parsed.port else ""
        )
        self.headers = dict(headers or {})
        self.external_url = external_url
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<WebhookNotifier {self.name!r} {self.where}>"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], key: Key) -> WebhookNotifier:
        """``[[notifiers]] type = "webhook"``: ``url`` (required), ``headers`` (table),
        ``external_url``, and the common ``name``, ``send_resolved``, ``severities``,
        ``rules``, ``retries``, ``retry_delay``, ``timeout``."""
        fields = Fields(section, key)
        fields.string("type", "webhook")
        url = fields.string("url")
        headers = fields.string_table("headers")
        external_url = fields.string("external_url", "")
        options = NotifierOptions.read(fields, "webhook")
        fields.done()
        try:
            return cls(url, options, headers=headers, external_url=external_url)
        except ValueError as exc:
            raise ConfigError(str(exc), key=fields.at("url")) from exc

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        import httpx

        async with httpx.AsyncClient(timeout=self.options.timeout, headers=self.headers) as c:
            self._client = c
            try:
                yield
            finally:
                self._client = None

    async def deliver(self, alert: Alert, started: float) -> None:
        import httpx

        body = alertmanager_payload(
            alert, started, receiver=self.name, external_url=self.external_url
        )
        client = self._client
        if client is None:  # used outside run(): one client for this call
            async with self.session():
                return await self.deliver(alert, started)
        try:  # streamed and closed unread: the answer's body is not ours to hold
            async with client.stream("POST", self.url, json=body) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            raise DeliveryError(str(exc) or type(exc).__name__, retry=True) from exc
        if status < 300:
            return
        retry = status in (408, 429) or status >= 500
        raise DeliveryError(f"{self.where} answered HTTP {status}", retry=retry)
