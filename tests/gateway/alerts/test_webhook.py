"""The webhook notifier against a real local HTTP receiver: Alertmanager's JSON, only
what fired (and its resolution), bounded retries."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from aiotmc.gateway.alerts import NotifierOptions, Rule, RuleEngine, RuleKind, WebhookNotifier
from aiotmc.gateway.alerts.webhook import ZERO_TIME, alertmanager_payload, fingerprint
from aiotmc.gateway.model import Alert, AlertState, Reading

from .http_receiver import DROP, HttpReceiver
from .minihub import MiniHub


def alert(state: AlertState, t: float = 1_800_000_000.5, **kw: object) -> Alert:
    fields: dict[str, object] = dict(
        rule="hot", instrument="psu", channel="volt", state=state, severity="critical",
        summary="psu/volt = 12 V (above 10)", timestamp=t, value=12.0,
        labels={"site": "lab", "host": "bench"},
    )  # fmt: skip
    fields.update(kw)
    return Alert(**fields)  # type: ignore[arg-type]


def options(**kw: object) -> NotifierOptions:
    return NotifierOptions(**{"name": "ops", "retry_delay": 0.01, "timeout": 5, **kw})  # type: ignore[arg-type]


@asynccontextmanager
async def running(*components: object) -> AsyncIterator[MiniHub]:
    hub = MiniHub()
    async with anyio.create_task_group() as tg:
        for component in components:
            await tg.start(component.run, hub)  # type: ignore[attr-defined]
        yield hub
        tg.cancel_scope.cancel()


def test_payload_is_alertmanagers_webhook_format() -> None:
    body = alertmanager_payload(alert(AlertState.RESOLVED), 1_800_000_000.0, receiver="ops")
    labels = {"alertname": "hot", "severity": "critical", "instrument": "psu",
              "channel": "volt", "site": "lab", "host": "bench"}  # fmt: skip
    assert body == {
        "version": "4",
        "groupKey": '{}:{alertname="hot"}',
        "truncatedAlerts": 0,
        "status": "resolved",
        "receiver": "ops",
        "groupLabels": {"alertname": "hot"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "psu/volt = 12 V (above 10)", "value": "12"},
        "externalURL": "",
        "alerts": [
            {
                "status": "resolved",
                "labels": labels,
                "annotations": {"summary": "psu/volt = 12 V (above 10)", "value": "12"},
                "startsAt": "2027-01-15T08:00:00.000Z",
                "endsAt": "2027-01-15T08:00:00.500Z",
                "generatorURL": "",
                "fingerprint": fingerprint(labels),
            }
        ],
    }
    firing = alertmanager_payload(alert(AlertState.FIRING, channel=None), 1.0, receiver="x")
    assert firing["alerts"][0]["endsAt"] == ZERO_TIME and "channel" not in firing["commonLabels"]
    # a fingerprint depends on the label set only, not on its order
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1", "b": "2"}) != fingerprint({"a": "12"})
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64 offset basis


async def test_the_engines_alerts_reach_the_receiver() -> None:
    engine = RuleEngine([Rule("hot", RuleKind.THRESHOLD, above=10, for_=0.2)])
    async with HttpReceiver() as rx:
        hook = WebhookNotifier(rx.url + "/alerts", options(), headers={"X-Token": "t0k"})
        async with running(engine, hook) as hub:
            for value in (12, 13):
                await hub.publish(Reading("gw", 0, "lab", "bench", "psu", "volt", value, "V",
                                          time.time()))  # fmt: skip
            first = await rx.next()
            await hub.publish(Reading("gw", 1, "lab", "bench", "psu", "volt", 1, "V", time.time()))
            second = await rx.next()
    assert (first.method, first.target) == ("POST", "/alerts")
    assert first.headers["x-token"] == "t0k"
    assert first.headers["content-type"] == "application/json"
    fired, resolved = json.loads(first.body), json.loads(second.body)
    assert (fired["status"], resolved["status"]) == ("firing", "resolved")  # pending: not news
    assert fired["alerts"][0]["startsAt"] == resolved["alerts"][0]["startsAt"]
    assert resolved["alerts"][0]["endsAt"] != ZERO_TIME
    assert fired["alerts"][0]["labels"]["alertname"] == "hot"
    assert len(rx.requests) == 2


async def test_only_what_fired_is_resolved_and_filters_apply() -> None:
    async with HttpReceiver() as rx:
        hook = WebhookNotifier(rx.url, options(severities=("critical",), rules=("h*",)))
        async with running(hook) as hub:
            await hub.publish(alert(AlertState.PENDING))
            await hub.publish(alert(AlertState.RESOLVED))  # never fired: not news
            await hub.publish(alert(AlertState.FIRING, severity="info"))
            await hub.publish(alert(AlertState.FIRING, rule="cold"))
            await hub.publish(alert(AlertState.FIRING, instrument="dmm"))
            got = json.loads((await rx.next()).body)
        # alerts are handled in order: the ones before were filtered out, not delayed
        assert got["commonLabels"]["instrument"] == "dmm" and len(rx.requests) == 1
    quiet = WebhookNotifier("http://127.0.0.1:1", options(send_resolved=False))
    assert quiet.news(alert(AlertState.FIRING)) is not None
    assert quiet.news(alert(AlertState.RESOLVED)) is None


@pytest.mark.parametrize(
    ("statuses", "sent", "failed", "requests"),
    [
        ([503, DROP, 200], 1, 0, 3),  # retried until accepted
        ([500, 500, 500], 0, 1, 3),  # retries=2: three attempts, then given up
        ([400], 0, 1, 1),  # refused: retrying will not help
        ([429, 204], 1, 0, 2),
    ],
)
async def test_retries_are_bounded(
    statuses: list[int], sent: int, failed: int, requests: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with HttpReceiver(statuses) as rx:
        hook = WebhookNotifier(rx.url, options(retries=2))
        async with hook.session():
            delivered = await hook.notify(alert(AlertState.FIRING), 1.0)
    assert (delivered, hook.sent, hook.failed, len(rx.requests)) == (
        sent == 1, sent, failed, requests
    )  # fmt: skip
    if failed:
        assert "notifier 'ops': firing alert hot for psu" in caplog.text


async def test_nobody_listening_is_retried_then_given_up() -> None:
    from ..sinks.pgcluster import free_port

    hook = WebhookNotifier(f"http://127.0.0.1:{free_port()}", options(retries=1))
    assert await hook.notify(alert(AlertState.FIRING), 1.0) is False
    assert hook.failed == 1
