"""QoS 0 PUBLISH packets (MQTT 5) encoded here and written through paho in one piece.

paho encodes every message on its own (a ``bytearray`` built field by field, an
``MQTTMessageInfo`` with a ``threading.Condition``, a dict in its output queue) and
writes each one with its own ``send()`` system call: about 20 µs of CPU per reading.
For QoS 0 readings, which need no packet id and no acknowledgement, :class:`PacketBurst`
encodes the packets itself (the topic's part once per topic) and :class:`PahoWriter`
queues a whole burst as one entry of the output queue of the connection paho holds:
paho still writes it (TLS, partial writes, the socket's write readiness, the keepalive
clock), in order with everything else it sends, with one ``send()`` per burst.

This uses two private parts of paho-mqtt 2.x (its ``_out_packet`` queue is fed through
``_packet_queue``); :meth:`PahoWriter.of` returns None when they are missing, and the
bridge then publishes message by message through paho's public API.
"""

from __future__ import annotations

import collections
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as mqtt

__all__ = ["PacketBurst", "PahoWriter", "remaining_length"]

#: PUBLISH, QoS 0, no DUP flag; bit 0 is RETAIN.
_PUBLISH: Final = 0x30
#: The most bytes after the fixed header that MQTT can express (four length bytes).
_MAX_REMAINING: Final = 268_435_455
#: Topic heads kept; more distinct topics than this clear the cache (it is only a cache).
_MAX_TOPICS: Final = 100_000


def remaining_length(length: int) -> bytes:
    """MQTT's variable byte integer: 7 bits per byte, low bits first."""
    if not 0 <= length <= _MAX_REMAINING:
        raise ValueError(f"an MQTT packet cannot hold {length} bytes")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class PacketBurst:
    """Encodes QoS 0 PUBLISH packets without properties into one buffer."""

    __slots__ = ("_heads", "_parts", "count")

    def __init__(self) -> None:
        #: Per topic: its length, its UTF-8 bytes and an empty property list.
        self._heads: dict[str, bytes] = {}
        self._parts: list[bytes] = []
        #: Packets added since the last :meth:`take`.
        self.count = 0

    def add(self, topic: str, payload: bytes, retain: bool) -> None:
        """Append one PUBLISH packet (``ValueError`` for a topic or payload MQTT cannot carry)."""
        head = self._heads.get(topic)
        if head is None:
            name = topic.encode()
            if not name or len(name) > 0xFFFF:
                raise ValueError(f"{topic!r} cannot be an MQTT topic")
            if len(self._heads) >= _MAX_TOPICS:
                self._heads.clear()
            head = self._heads[topic] = len(name).to_bytes(2, "big") + name + b"\x00"
        length = len(head) + len(payload)
        command = _PUBLISH | 1 if retain else _PUBLISH
        if length < 0x80:
            fixed = bytes((command, length))
        elif length < 0x4000:
            fixed = bytes((command, (length & 0x7F) | 0x80, length >> 7))
        else:
            fixed = bytes((command,)) + remaining_length(length)
        self._parts += (fixed, head, payload)
        self.count += 1

    def take(self) -> bytes:
        """The packets added so far, in order, as one buffer; the burst starts empty again."""
        data = b"".join(self._parts)
        self._parts.clear()
        self.count = 0
        return data


class PahoWriter:
    """Hands ready-made packets to a connected paho client, which writes them in order."""

    __slots__ = ("_paho",)

    def __init__(self, paho: mqtt.Client) -> None:
        self._paho = paho

    @classmethod
    def of(cls, client: aiomqtt.Client) -> PahoWriter | None:
        """The writer for aiomqtt's paho client, or None where this paho (or aiomqtt) is
        not laid out as expected."""
        paho: Any = getattr(client, "_client", None)
        if (
            isinstance(paho, mqtt.Client)
            and isinstance(getattr(paho, "_out_packet", None), collections.deque)
            and callable(getattr(paho, "_packet_queue", None))
        ):
            return cls(paho)
        return None

    @property
    def busy(self) -> bool:
        """Whether paho still holds bytes it has not written."""
        return bool(self._paho.want_write())

    def write(self, data: bytes) -> None:
        """Queue ``data`` (whole packets) after whatever paho is sending; paho writes it
        when the socket is writable. ``MqttCodeError`` when there is no connection."""
        paho: Any = self._paho
        if paho._sock is None:
            raise aiomqtt.MqttCodeError(mqtt.MQTT_ERR_NO_CONN, "Could not publish message")
        # Command 0: no PUBLISH bookkeeping in paho (no message info, no on_publish call).
        paho._packet_queue(0, data, 0, 0)
