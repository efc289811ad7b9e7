"""Readings into a NATS JetStream stream: the measurement log of distributed acquisition.

Each reading is one message on ``<subject>.<host>.<instrument>.<channel>`` (names made
subject-safe), its JSON as the payload (:meth:`Reading.to_json`) and its idempotent key
as ``Nats-Msg-Id``, so a batch the spool sends again after a crash or an outage is stored
once (within the stream's duplicate window, two minutes by default). A batch is
published in one go (one socket write per 64 KiB) and then every acknowledgement
awaited together (one reply group, one wait): the spool moves its cursor only once the
stream has stored them all.
Config (``[[sinks]] type = "jetstream"``)::

    [[sinks]]
    type = "jetstream"
    url = "nats://central:4222"        # or an array: nodes of one cluster
    stream = "AIOTMC_READINGS"         # created if missing
    subject = "aiotmc.readings"
    user = "bench1"                    # with password_file = "...", or token_env = "..."
    tls_ca = "ca.pem"                  # optional
    max_age = 604800                   # seconds the stream keeps readings (optional)

Runs on asyncio and trio (aiotmc's own NATS client).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from ..._exceptions import AiotmcError, SinkUnavailableError
from ...protocol.nats import Msg
from ...transports.nats.connection import NatsConnection, NatsServer
from ...transports.nats.jetstream import JetStream, json_answer
from ..fields import Fields, Key
from ..model import Reading
from ..natsconfig import nats_servers, subject_token

__all__ = ["DEFAULT_STREAM", "DEFAULT_SUBJECT", "JetStreamSink"]

DEFAULT_STREAM: Final = "AIOTMC_READINGS"
DEFAULT_SUBJECT: Final = "aiotmc.readings"
_ACK_TIMEOUT: Final = 10.0
_CACHE: Final = 100_000  # subjects and payload templates remembered (channels)


class JetStreamSink:
    """A :class:`~aiotmc.gateway.Sink` publishing readings into a JetStream stream."""

    def __init__(
        self,
        servers: Sequence[NatsServer],
        *,
        name: str = "jetstream",
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        max_age: float | None = None,
    ) -> None:
        self.name = name
        self.servers = list(servers)
        self.stream = stream
        self.subject = subject
        self.max_age = max_age
        self.published = 0  #: readings the stream acknowledged
        self.duplicates = 0  #: of which it already had (a replay)
        self._nc: NatsConnection | None = None
        self._subjects: dict[tuple[str, str, str], str] = {}
        self._templates: dict[tuple[str, str, str, str, str, str], tuple[str, str, str]] = {}

    def __repr__(self) -> str:
        return f"JetStreamSink({self.name!r}, {self.servers[0]!r}, stream={self.stream!r})"

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any], key: Key, *, config_dir: Path | None = None
    ) -> JetStreamSink:
        """Build from a ``[[sinks]]`` table (validated up front)."""
        fields = Fields(section, key)
        fields.string("type")
        name = fields.name("name", "jetstream")
        servers = nats_servers(fields, config_dir)
        stream = fields.string("stream", DEFAULT_STREAM)
        subject = fields.string("subject", DEFAULT_SUBJECT)
        max_age = fields.number("max_age", None, minimum=1)
        fields.done()
        return cls(servers, name=name, stream=stream, subject=subject, max_age=max_age)

    async def open(self) -> None:
        """Connect and make sure the stream exists (SinkUnavailableError if it cannot)."""
        if self._nc is not None:
            if not self._nc.closed:
                return
            await self._drop()  # lost while idle: release it before connecting again
        try:
            nc = await NatsConnection.connect_any(self.servers, timeout=5, name="aiotmc gateway")
        except AiotmcError as exc:
            raise SinkUnavailableError(f"{self.name}: {exc}") from exc
        try:
            await JetStream(nc).ensure_stream(
                self.stream, [f"{self.subject}.>"], max_age=self.max_age
            )
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await nc.aclose()
            if isinstance(exc, AiotmcError):
                raise SinkUnavailableError(f"{self.name}: {exc}") from exc
            raise
        self._nc = nc

    def subject_of(self, reading: Reading) -> str:
        """Where ``reading`` is published."""
        where = (reading.host, reading.instrument, reading.channel)
        subject = self._subjects.get(where)
        if subject is None:
            subject = ".".join([self.subject, *(subject_token(t) for t in where)])
            if len(self._subjects) < _CACHE:
                self._subjects[where] = subject
        return subject

    def payload_of(self, reading: Reading) -> bytes:
        """``json.dumps(reading.to_json())``, byte for byte, from a template per channel
        (the fields that repeat are encoded once): a third of the cost."""
        r = reading
        where = (r.gateway_id, r.site, r.host, r.instrument, r.channel, r.unit)
        template = self._templates.get(where)
        if template is None:
            d = json.dumps
            template = (
                f'{{"gateway_id": {d(r.gateway_id)}, "seq": ',
                f', "site": {d(r.site)}, "host": {d(r.host)}, "instrument": '
                f'{d(r.instrument)}, "channel": {d(r.channel)}, "value": ',
                f', "unit": {d(r.unit)}, "timestamp": ',
            )
            if len(self._templates) < _CACHE:
                self._templates[where] = template
        value, ts = r.value, r.timestamp
        head, middle, tail = template
        if type(value) is float and math.isfinite(value):
            text = float.__repr__(value)
        else:
            text = json.dumps(value)
        stamp = float.__repr__(ts) if type(ts) is float and math.isfinite(ts) else json.dumps(ts)
        return (
            f'{head}{int(r.seq)}{middle}{text}{tail}{stamp}, "quality": '
            f"{json.dumps(r.quality.value)}}}"
        ).encode()

    async def write(self, batch: Sequence[Reading]) -> None:
        """Publish the batch, then wait for every acknowledgement."""
        await self.open()
        nc = self._nc
        assert nc is not None
        group = None
        try:
            group = nc.open_group()
            subject_of, payload_of, reply = self.subject_of, self.payload_of, group.subject
            messages = [
                (subject_of(r), payload_of(r), reply(i), {"Nats-Msg-Id": r.key})
                for i, r in enumerate(batch)
            ]
            await nc.publish_many(messages)  # one write per 64 KiB, not one per reading
            with anyio.move_on_after(_ACK_TIMEOUT):
                await group.wait(len(batch))
            if len(group.replies) < len(batch):
                raise SinkUnavailableError(
                    f"{self.name}: the stream did not acknowledge in time "
                    f"({len(group.replies)} of {len(batch)})"
                )
            for i in range(len(batch)):
                self._acknowledged(group.replies[i])
        except AiotmcError as exc:
            if isinstance(exc, SinkUnavailableError):
                raise
            await self._drop()
            raise SinkUnavailableError(f"{self.name}: {exc or 'connection lost'}") from exc
        finally:
            if group is not None:
                nc.close_group(group)

    def _acknowledged(self, msg: Msg) -> None:
        if msg.status == 503:
            raise SinkUnavailableError(f"{self.name}: no stream takes {self.subject}.>")
        payload = msg.payload
        if (
            msg.status is None
            and payload.startswith(b'{"stream":')
            and b'"error"' not in payload
            and b'"duplicate"' not in payload
        ):
            self.published += 1  # the usual {"stream":"S", "seq":N}: no JSON decoding
            return
        answer = json_answer(msg)
        self.published += 1
        if answer.get("duplicate"):
            self.duplicates += 1

    async def _drop(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            with anyio.CancelScope(shield=True):
                await nc.aclose()

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        await self._drop()
