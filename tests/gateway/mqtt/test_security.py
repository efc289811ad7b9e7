"""Broker security with a real mosquitto: passwords, TLS, the documented ACL, and remote
control over MQTT 5 command topics (response topic + correlation data), audited."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest

import aiotmc
from aiotmc.gateway.control import GatewayController
from aiotmc.gateway.control import from_config as control_from_config
from aiotmc.gateway.mqtt import MqttBridge, from_config
from aiotmc.sim.devices.psu import SimPsu

from .broker import BASE, USERS, Mosquitto, TlsFiles, require
from .client import call, connect, next_message, on
from .hub import LocalHub
from .test_bridge import gateway_config, reading, running

CONTROL: dict[str, Any] = {
    "control": {
        "operations": [
            {
                "name": "set_voltage",
                "instruments": ["psu1"],
                "command": "VOLT {value}",
                "type": "float",
                "min": 0,
                "max": 30,
                "unit": "V",
            }
        ]
    },
    "roles": [
        {"name": "operator", "users": ["alice"], "allow": ["set_voltage"]},
        {"name": "viewer", "users": ["carol"], "allow": []},
        {"name": "admin", "users": ["root"], "allow": ["*"], "scpi": True},
    ],
}


async def test_wrong_password_is_refused(secure_broker: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError) as info:
        async with aiomqtt.Client(
            "127.0.0.1",
            secure_broker.port,
            username="alice",
            password="wrong",
            protocol=aiomqtt.ProtocolVersion.V5,
        ):
            pass  # pragma: no cover
    assert "password" in str(info.value).lower() or "authori" in str(info.value).lower()
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", secure_broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ):
            pass  # pragma: no cover  (anonymous)


async def test_bridge_with_a_wrong_password_keeps_retrying(secure_broker: Mosquitto) -> None:
    bridge = from_config({**gateway_config(secure_broker), "password": "nope"})
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run, LocalHub(gateway_id="gw-badpw"))
        with anyio.fail_after(10):
            await bridge.wait_until(lambda b: b.failures >= 2)  # it retries
        assert not bridge.connected and bridge.connections == 0
        assert bridge.last_error is not None and "MqttConnectError" in bridge.last_error
        tg.cancel_scope.cancel()


# paho drops the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_with_the_lab_ca(secure_broker: Mosquitto, tls_files: TlsFiles) -> None:
    assert secure_broker.tls_port is not None
    hub = LocalHub(gateway_id="gw-tls")
    bridge = from_config(
        {
            **gateway_config(secure_broker),
            "port": secure_broker.tls_port,
            "tls": {"ca_file": str(tls_files.ca)},
        }
    )
    async with connect(secure_broker, "root") as observer, running(bridge, hub):
        await observer.subscribe(f"{BASE}/tls1/voltage")
        await hub.publish(reading("tls1", "voltage", 2.5))
        message = await next_message(observer, on(f"{BASE}/tls1/voltage"))
        assert json.loads(message.payload)["value"] == 2.5
    # With the system's CAs instead of the lab's, the broker's certificate is refused.
    untrusting = from_config(
        {**gateway_config(secure_broker), "port": secure_broker.tls_port, "tls": True}
    )
    async with anyio.create_task_group() as tg:
        await tg.start(untrusting.run, LocalHub(gateway_id="gw-untrusting"))
        with anyio.fail_after(10):
            await untrusting.wait_until(lambda b: b.failures >= 1)
        tg.cancel_scope.cancel()
    assert untrusting.connections == 0
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusting.last_error or "")
    gc.collect()


@asynccontextmanager
async def controlled_gateway(
    broker: Mosquitto, tmp_path: Path
) -> AsyncIterator[tuple[MqttBridge, GatewayController, SimPsu]]:
    device = SimPsu(limits=((30.0, 3.0),))
    async with aiotmc.open("SIM::psu1::x", device=device) as psu:
        controller = control_from_config(
            CONTROL, instrument_for={"psu1": psu}.__getitem__, data_dir=tmp_path
        )
        hub = LocalHub(gateway_id="gw-control", controller=controller)
        bridge = from_config(gateway_config(broker, discovery=False))
        async with running(bridge, hub):
            yield bridge, controller, device


def audit(controller: GatewayController) -> list[dict[str, Any]]:
    assert controller.audit.path is not None
    if not controller.audit.path.exists():
        return []
    return [json.loads(line) for line in controller.audit.path.read_text().splitlines()]


async def test_remote_control_through_the_acl(secure_broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        controlled_gateway(secure_broker, tmp_path) as (bridge, controller, device),
        connect(secure_broker, "alice") as alice,
        connect(secure_broker, "carol") as carol,
    ):
        await alice.subscribe(f"{BASE}/$reply/alice/#", qos=1)

        # An authorized command runs, is answered (correlation data echoed) and audited.
        reply = await call(alice, "alice", "psu1", "set_voltage", 12.5, correlation=b"c1")
        assert reply == {"ok": True, "detail": "psu1: VOLT 12.5", "answer": None, "error": None}
        assert device.channels[0].voltage == 12.5

        # A value outside the limits is refused, and audited as refused.
        reply = await call(alice, "alice", "psu1", "set_voltage", 31, correlation=b"c2")
        assert reply["ok"] is False and reply["error"] == "out_of_limits"
        assert device.channels[0].voltage == 12.5

        # Raw SCPI is for admins.
        reply = await call(alice, "alice", "psu1", "scpi", "VOLT 1", correlation=b"c3")
        assert reply["error"] == "not_allowed" and device.channels[0].voltage == 12.5

        # The viewer's publishes to command topics (its own and, spoofing, alice's) are
        # dropped by the broker's ACL: QoS 1, so each is acknowledged before we go on.
        payload = json.dumps({"value": 1.0})
        await carol.publish(f"{BASE}/$cmd/carol/psu1/set_voltage", payload, qos=1)
        await carol.publish(f"{BASE}/$cmd/alice/psu1/set_voltage", payload, qos=1)
        # A reply topic outside alice's own reply tree: refused, never run.
        reply_to_spoof = f"{BASE}/psu1/voltage"
        with pytest.raises(TimeoutError):
            await call(
                alice,
                "alice",
                "psu1",
                "set_voltage",
                2.0,
                correlation=b"c4",
                response_topic=reply_to_spoof,
                timeout=0.3,
            )
        # mosquitto handles messages in order: by the time this one is answered, anything
        # carol's publishes could have caused has happened.
        reply = await call(alice, "alice", "psu1", "set_voltage", 20.0, correlation=b"c5")
        assert reply["ok"] is True and device.channels[0].voltage == 20.0

    entries = audit(controller)
    assert {e["user"] for e in entries} == {"alice"}, entries
    assert [(e["value"], e["ok"], e["reason"]) for e in entries] == [
        (12.5, True, None),
        (31, False, "out_of_limits"),
        ("VOLT 1", False, "not_allowed"),
        (2.0, False, "not_allowed"),
        (20.0, True, None),
    ]
    assert [e["command"] for e in entries if e["ok"]] == ["VOLT 12.5", "VOLT 20.0"]
    assert bridge.commands == 5


async def test_admin_raw_scpi_and_malformed_payloads(
    secure_broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        controlled_gateway(secure_broker, tmp_path) as (_, controller, device),
        connect(secure_broker, "root") as root,
    ):
        await root.subscribe(f"{BASE}/$reply/root/#", qos=1)
        reply = await call(root, "root", "psu1", "scpi", "*IDN?", correlation=b"idn")
        assert reply["ok"] is True and "SIM-PSU" in reply["answer"]
        reply = await call(root, "root", "psu1", "set_voltage", "lots", correlation=b"bad")
        assert reply["error"] == "bad_value"
        # A payload that is not a JSON object is refused before it reaches the controller.
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{BASE}/$reply/root/x"
        props.CorrelationData = b"junk"
        await root.publish(f"{BASE}/$cmd/root/psu1/set_voltage", b"[1,2", qos=1, properties=props)
        junk = await next_message(
            root, lambda m: getattr(m.properties, "CorrelationData", None) == b"junk"
        )
        assert json.loads(junk.payload)["error"] == "bad_value"
    assert device.channels[0].voltage == 0.0
    assert [e["ok"] for e in audit(controller)] == [True, False, False]


async def test_the_documented_mosquitto_rr_command(
    secure_broker: Mosquitto, tmp_path: Path
) -> None:
    """docs/gateway.md's request/response example, with mosquitto's own client."""
    rr = require("mosquitto_rr")
    async with controlled_gateway(secure_broker, tmp_path) as (_, controller, device):
        done = await anyio.run_process(
            [
                rr,
                *("-h", "127.0.0.1", "-p", str(secure_broker.port)),
                *("-u", "alice", "-P", USERS["alice"], "-W", "10"),
                *("-t", f"{BASE}/$cmd/alice/psu1/set_voltage"),
                *("-e", f"{BASE}/$reply/alice/rr", "-m", '{"value": 12.5}'),
            ],
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ok": True,
        "detail": "psu1: VOLT 12.5",
        "answer": None,
        "error": None,
    }
    assert device.channels[0].voltage == 12.5
    assert [e["user"] for e in audit(controller)] == ["alice"]
