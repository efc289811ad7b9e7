"""QoS 0 PUBLISH packets encoded by the bridge: the bytes paho would send, and the burst
path against a real mosquitto (in order, over TLS too), and paho's path when it is off."""

from __future__ import annotations

import json
from typing import Any

import anyio
import paho.mqtt.client as mqtt
import pytest

from aiotmc.gateway.mqtt import bridge as bridge_module
from aiotmc.gateway.mqtt import from_config
from aiotmc.gateway.mqtt.packets import PacketBurst, PahoWriter, remaining_length

from .broker import BASE, Mosquitto, TlsFiles
from .client import connect, on
from .hub import LocalHub
from .test_bridge import gateway_config, reading, running


def paho_packet(topic: str, payload: bytes, retain: bool) -> bytes:
    """What paho itself queues for this QoS 0 MQTT 5 message."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    queued: list[bytes] = []
    client._sock = object()  # type: ignore[assignment]  # "connected": it only checks for None
    client._packet_queue = lambda command, packet, *rest: queued.append(bytes(packet))  # type: ignore[method-assign]
    try:
        client.publish(topic, payload, 0, retain)
    finally:
        client._sock = None
    return queued[0]


@pytest.mark.parametrize("size", [0, 10, 100, 126, 127, 200, 16_380, 16_400, 70_000])
@pytest.mark.parametrize("retain", [False, True])
def test_burst_encodes_what_paho_would(size: int, retain: bool) -> None:
    burst = PacketBurst()
    topic, payload = (
        "aiotmc/lab/gw1/dmm/voltage",
        bytes(range(256)) * (size // 256) + b"x" * (size % 256),
    )
    burst.add(topic, payload, retain)
    burst.add("é/t", b"2", False)
    assert burst.count == 2
    assert burst.take() == paho_packet(topic, payload, retain) + paho_packet("é/t", b"2", False)
    assert burst.count == 0 and burst.take() == b""


def test_lengths_and_refusals() -> None:
    assert [remaining_length(n) for n in (0, 127, 128, 16_383, 16_384, 268_435_455)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
        b"\xff\xff\xff\x7f",
    ]
    with pytest.raises(ValueError, match="cannot hold"):
        remaining_length(268_435_456)
    with pytest.raises(ValueError, match="topic"):
        PacketBurst().add("", b"x", False)
    with pytest.raises(ValueError, match="topic"):
        PacketBurst().add("x" * 65_536, b"x", False)


@pytest.mark.parametrize("writer", ["bursts", "paho"])
async def test_many_readings_arrive_in_order(
    secure_broker: Mosquitto, tls_files: TlsFiles, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More readings than a burst holds, over TLS: each arrives once, in order, whether the
    bridge encodes the bursts or (another paho) leaves every message to paho."""
    writes: list[int] = []
    if writer == "paho":
        monkeypatch.setattr(PahoWriter, "of", classmethod(lambda cls, client: None))
    else:
        write = PahoWriter.write

        def counted(self: PahoWriter, data: bytes) -> None:
            writes.append(len(data))
            write(self, data)

        monkeypatch.setattr(PahoWriter, "write", counted)
    count = 3 * bridge_module.BURST + 10
    hub = LocalHub(gateway_id="gw-burst")
    tls = {"ca_file": str(tls_files.ca)}
    config = gateway_config(secure_broker, port=secure_broker.tls_port, tls=tls, discovery=False)
    bridge = from_config(config)
    values: list[Any] = []
    async with connect(secure_broker, "root") as observer:
        await observer.subscribe(f"{BASE}/burst/#")
        async with running(bridge, hub):
            for seq in range(count):
                await hub.publish(reading("burst", f"ch{seq % 7}", float(seq), seq=seq))
            with anyio.fail_after(20):
                async for message in observer.messages:
                    assert on(f"{BASE}/burst/ch{len(values) % 7}")(message)
                    values.append(json.loads(message.payload)["value"])
                    if len(values) == count:
                        break
    assert values == [float(seq) for seq in range(count)]
    assert bridge.published >= count and bridge.queue.dropped == 0
    if writer == "paho":
        assert writes == []
    else:  # several readings per write
        assert 0 < len(writes) < count
