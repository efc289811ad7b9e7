"""JetStream on aiotmc's anyio NATS connection: streams, acknowledged publishing with
de-duplication, durable pull consumers, and key-value buckets with a TTL.

JetStream is driven by JSON requests on ``$JS.API.*`` subjects of the core protocol
(https://docs.nats.io/reference/reference-protocols/nats_api_reference), so it needs
nothing beyond :class:`~.connection.NatsConnection`. Only what the agent and the collector
use is here:

* :meth:`JetStream.ensure_stream`: create a stream, or accept the one that exists;
* :meth:`JetStream.publish`: publish and wait for the stream's acknowledgement, with a
  ``Nats-Msg-Id`` so that a re-sent message within the duplicate window is stored once;
* :meth:`JetStream.pull`: fetch a batch from a durable pull consumer; each message is
  acknowledged with :meth:`JsMessage.ack` once it is safely stored downstream, so that a
  restarted consumer resumes after its last acknowledgement;
* :class:`KeyValue`: a bucket whose entries expire (``max_age``): presence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from ..._exceptions import (
    ConnectionLostError,
    PermissionDeniedError,
    RemoteProtocolError,
    ResourceNotFoundError,
)
from ...protocol.nats import Msg
from .connection import NatsConnection

__all__ = [
    "JetStream",
    "JetStreamError",
    "JsMessage",
    "KeyValue",
    "PubAck",
    "ack_all",
    "json_answer",
]

_API: Final = "$JS.API"
_NO_MESSAGES: Final = 404
_STREAM_IN_USE: Final = 10058  #: "stream name already in use" (with another config)


class JetStreamError(RemoteProtocolError):
    """JetStream refused a request (``code`` and ``err_code`` from its API)."""

    def __init__(self, message: str, *, code: int = 0, err_code: int = 0) -> None:
        self.code = code
        self.err_code = err_code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class PubAck:
    """The stream's acknowledgement of a published message."""

    stream: str
    seq: int
    duplicate: bool = False


@dataclass(slots=True)
class JsMessage:
    """A message fetched from a pull consumer."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    reply: str | None
    _js: JetStream = field(repr=False)

    @property
    def stream_seq(self) -> int:
        """The message's sequence number in the stream (from the ack subject)."""
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
        parts = (self.reply or "").split(".")
        try:
            return int(parts[5]) if len(parts) >= 9 else 0
        except ValueError:
            return 0

    async def ack(self) -> None:
        """Acknowledge: the consumer will not deliver this message again."""
        if self.reply:
            await self._js.nc.publish(self.reply, b"+ACK")

    async def in_progress(self) -> None:
        """Still working on it: JetStream waits another ``ack_wait`` before redelivering."""
        if self.reply:
            await self._js.nc.publish(self.reply, b"+WPI")


async def ack_all(messages: Sequence[JsMessage], *, reply: bytes = b"+ACK") -> None:
    """Acknowledge (or ``+WPI``) every message of a batch in one write per 64 KiB."""
    by_connection: dict[int, tuple[NatsConnection, list[JsMessage]]] = {}
    for message in messages:
        if message.reply:
            nc = message._js.nc
            by_connection.setdefault(id(nc), (nc, []))[1].append(message)
    for nc, batch in by_connection.values():
        await nc.publish_many([(m.reply or "", reply, None, None) for m in batch])


class JetStream:
    """JetStream requests over ``nc`` (a connection the caller owns)."""

    def __init__(self, nc: NatsConnection, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Msg:
        """One request with one reply (ResourceNotFoundError: JetStream is not enabled)."""
        nc = self.nc
        inbox, replies = nc.open_inbox()
        try:
            await nc.publish(subject, payload, reply=inbox, headers=headers)
            with anyio.move_on_after(self.timeout if timeout is None else timeout):
                try:
                    msg = await replies.receive()
                except anyio.EndOfStream:
                    raise nc._lost() from None
                if msg.status == 503:
                    raise ResourceNotFoundError(
                        f"no JetStream on nats://{nc.server.host}:{nc.server.port} "
                        "(start nats-server with -js)"
                    )
                if msg.status == 403:  # the server's permissions refused the request
                    raise PermissionDeniedError(msg.payload.decode("utf-8", "replace"))
                return msg
            raise ConnectionLostError(f"JetStream did not answer {subject} in time")
        finally:
            nc.close_inbox(inbox)
            replies.close()

    async def api(self, what: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A ``$JS.API.<what>`` call: its JSON answer (JetStreamError on an error)."""
        payload = json.dumps(body).encode() if body is not None else b""
        msg = await self.request(f"{_API}.{what}", payload)
        return json_answer(msg)

    # -- streams ---------------------------------------------------------------------------

    async def ensure_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
        storage: str = "file",
        max_bytes: int = -1,
    ) -> dict[str, Any]:
        """Create stream ``name`` (or keep the existing one); its info. A user allowed
        to look at the stream but not to create it (an agent) gets the info of the stream
        someone else created, or JetStreamError while there is none."""
        config: dict[str, Any] = {
            "name": name,
            "subjects": subjects,
            "storage": storage,
            "retention": "limits",
            "discard": "old",
            "max_bytes": max_bytes,
            "duplicate_window": int(duplicate_window * 1e9),
            "num_replicas": 1,
        }
        if max_age is not None:
            config["max_age"] = int(max_age * 1e9)
        try:
            return await self.api(f"STREAM.CREATE.{name}", config)
        except PermissionDeniedError:
            return await self.api(f"STREAM.INFO.{name}")
        except JetStreamError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
            return await self.api(f"STREAM.INFO.{name}")

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PubAck:
        """Publish into a stream and wait for its acknowledgement (stored on disk)."""
        all_headers = dict(headers or {})
        if msg_id is not None:
            all_headers["Nats-Msg-Id"] = msg_id
        msg = await self.request(subject, payload, headers=all_headers or None)
        answer = json_answer(msg)
        try:
            return PubAck(str(answer["stream"]), int(answer["seq"]), bool(answer.get("duplicate")))
        except (KeyError, TypeError, ValueError):
            raise RemoteProtocolError(f"malformed JetStream acknowledgement {answer!r}") from None

    # -- durable pull consumers ------------------------------------------------------------

    async def ensure_consumer(
        self, stream: str, durable: str, *, filter_subject: str | None = None, ack_wait: float = 30
    ) -> dict[str, Any]:
        """Create (or keep) a durable pull consumer with explicit acknowledgements."""
        config: dict[str, Any] = {
            "durable_name": durable,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": int(ack_wait * 1e9),
            "max_ack_pending": 100_000,
        }
        if filter_subject:
            config["filter_subject"] = filter_subject
        return await self.api(
            f"CONSUMER.DURABLE.CREATE.{stream}.{durable}", {"stream_name": stream, "config": config}
        )

    async def pull(
        self, stream: str, durable: str, *, batch: int = 100, expires: float = 1.0
    ) -> list[JsMessage]:
        """Up to ``batch`` messages, waiting at most ``expires`` seconds for the first."""
        nc = self.nc
        inbox = nc.unique_subject()
        sub = await nc.subscribe(inbox, maxsize=math.inf)
        request = {"batch": batch, "expires": int(expires * 1e9)}
        out: list[JsMessage] = []
        try:
            await nc.publish(
                f"{_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            with anyio.move_on_after(expires + self.timeout):
                while len(out) < batch:
                    try:
                        msg = await sub.messages.receive()
                    except anyio.EndOfStream:
                        raise nc._lost() from None
                    if msg.status is not None:  # 404 no messages, 408 expired, 409...
                        if msg.status == 503:
                            raise ResourceNotFoundError("JetStream is not enabled")
                        break
                    out.append(JsMessage(msg.subject, msg.payload, msg.headers, msg.reply, self))
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
        return out


class KeyValue:
    """A JetStream key-value bucket (stream ``KV_<bucket>``) whose entries expire."""

    def __init__(self, js: JetStream, bucket: str) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"

    @classmethod
    async def create(cls, js: JetStream, bucket: str, *, ttl: float) -> KeyValue:
        """The bucket, created if missing; entries older than ``ttl`` seconds vanish."""
        config = {
            "name": f"KV_{bucket}",
            "subjects": [f"$KV.{bucket}.>"],
            "storage": "file",
            "retention": "limits",
            "discard": "new",
            "max_msgs_per_subject": 1,
            "max_age": int(ttl * 1e9),
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": True,
            "num_replicas": 1,
            "duplicate_window": int(min(ttl, 120.0) * 1e9),
        }
        try:
            await js.api(f"STREAM.CREATE.KV_{bucket}", config)
        except JetStreamError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
        return cls(js, bucket)

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; the entry's revision."""
        ack = await self.js.publish(f"$KV.{self.bucket}.{key}", value)
        return ack.seq

    async def get(self, key: str) -> bytes | None:
        """The live value of ``key``, or None (never set, deleted or expired)."""
        msg = await self.js.request(f"{_API}.DIRECT.GET.{self.stream}.$KV.{self.bucket}.{key}")
        if msg.status == _NO_MESSAGES:
            return None
        if msg.status is not None:
            raise JetStreamError(f"KV get {key}: status {msg.status}")
        if msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return msg.payload

    async def keys(self) -> list[str]:
        """The keys with a live value."""
        info = await self.js.api(
            f"STREAM.INFO.{self.stream}", {"subjects_filter": f"$KV.{self.bucket}.>"}
        )
        subjects = info.get("state", {}).get("subjects") or {}
        prefix = f"$KV.{self.bucket}."
        return sorted(s[len(prefix) :] for s in subjects if s.startswith(prefix))


def json_answer(msg: Msg) -> dict[str, Any]:
    """The JSON object of a JetStream answer (JetStreamError when it reports an error)."""
    try:
        answer = json.loads(msg.payload)
    except ValueError:
        raise RemoteProtocolError(f"JetStream answered non-JSON {msg.payload[:60]!r}") from None
    if not isinstance(answer, dict):
        raise RemoteProtocolError("JetStream answered a non-object")
    error = answer.get("error")
    if isinstance(error, dict):
        raise JetStreamError(
            f"JetStream: {error.get('description', error)}",
            code=int(error.get("code", 0) or 0),
            err_code=int(error.get("err_code", 0) or 0),
        )
    return answer


def seconds(ns: int | float) -> float:
    """Nanoseconds (JetStream's durations) as seconds."""
    return float(ns) / 1e9 if ns and math.isfinite(ns) else 0.0
