"""Topic names, payloads and the publish queue (no broker)."""

from __future__ import annotations

import json

import anyio
import pytest

from aiotmc.gateway.control import Refusal, refuse
from aiotmc.gateway.model import CommandResult, Quality
from aiotmc.gateway.mqtt import Outgoing, PublishQueue, Topics
from aiotmc.gateway.mqtt.topics import (
    check_level,
    discovery_payload,
    reading_payload,
    reply_payload,
)

from .test_bridge import reading

TOPICS = Topics("aiotmc", "lab", "gw1", "gw-test")


def test_topic_tree() -> None:
    assert TOPICS.reading("dmm", "voltage") == "aiotmc/lab/gw1/dmm/voltage"
    assert TOPICS.instrument_status("dmm") == "aiotmc/lab/gw1/dmm/$status"
    assert TOPICS.status == "aiotmc/lab/gw1/$status"
    assert TOPICS.alert("hot", "oven") == "aiotmc/lab/gw1/$alerts/hot/oven"
    assert TOPICS.commands == "aiotmc/lab/gw1/$cmd/+/+/+"
    assert TOPICS.parse_command("aiotmc/lab/gw1/$cmd/alice/psu1/set_voltage") == (
        "alice",
        "psu1",
        "set_voltage",
    )
    assert TOPICS.parse_command("aiotmc/lab/gw1/$cmd/alice/psu1") is None
    assert TOPICS.parse_command("aiotmc/lab/gw2/$cmd/alice/psu1/x") is None
    assert TOPICS.discovery("dmm", "voltage") == (
        "homeassistant/sensor/aiotmc_gw-test/dmm_voltage/config"
    )


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "$status", "tab\there"])
def test_unsafe_levels_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="topic level"):
        check_level(name)


def test_reply_topics_stay_in_the_users_tree() -> None:
    assert TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/$reply/alice/r1")
    assert TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/$reply/alice/a/b")
    assert not TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/$reply/alice/")
    assert not TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/$reply/bob/r1")
    assert not TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/dmm/voltage")
    assert not TOPICS.reply_allowed("alice", "aiotmc/lab/gw1/$reply/alice/+")


def test_payloads() -> None:
    sample = reading("dmm", "state", True, quality=Quality.GOOD, unit="")
    assert json.loads(reading_payload(sample))["value"] is True
    config = json.loads(discovery_payload(TOPICS, sample))
    assert "unit_of_measurement" not in config and "state_class" not in config
    assert json.loads(reply_payload(CommandResult(True, "done", "42"))) == {
        "ok": True,
        "detail": "done",
        "answer": "42",
        "error": None,
    }
    refused = json.loads(reply_payload(refuse(Refusal.OUT_OF_LIMITS, "too high")))
    assert refused["error"] == "out_of_limits" and refused["ok"] is False


def test_queue_lanes_and_put_back() -> None:
    queue = PublishQueue(2, control_size=1)
    queue.put(Outgoing("r/1", b"1"))
    queue.put(Outgoing("r/2", b"2"))
    queue.put(Outgoing("s/a", b"old", lane="state"))
    queue.put(Outgoing("s/a", b"new", lane="state"))  # replaces the waiting one
    queue.put(Outgoing("c/1", b"1", lane="control"))
    queue.put(Outgoing("c/2", b"2", lane="control"))  # drops c/1
    queue.put(Outgoing("r/3", b"3"))  # drops r/1
    assert queue.depth == 4 and queue.dropped == 2
    order = [queue.get_nowait() for _ in range(4)]
    assert [(m.topic, m.payload) for m in order if m] == [
        ("s/a", b"new"),
        ("c/2", b"2"),
        ("r/2", b"2"),
        ("r/3", b"3"),
    ]
    assert queue.get_nowait() is None
    queue.put(Outgoing("r/4", b"4"))
    queue.put(Outgoing("r/5", b"5"))
    queue.put_back(Outgoing("r/3", b"3"))  # undelivered: first again; the newest goes
    assert [m.topic for m in (queue.get_nowait(), queue.get_nowait()) if m] == ["r/3", "r/4"]
    assert queue.dropped == 3


async def test_queue_get_waits(anyio_backend: str) -> None:
    queue = PublishQueue(10)
    async with anyio.create_task_group() as tg:
        got: list[Outgoing] = []

        async def taker() -> None:
            got.append(await queue.get())

        tg.start_soon(taker)
        await anyio.wait_all_tasks_blocked()
        queue.put(Outgoing("t", b"x"))
    assert got[0].topic == "t"
