"""The remote-control controller: roles, limits, raw SCPI for admins only, the audit log,
and config validation with key paths. Runs on asyncio and trio against a simulated supply."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiotmc
from aiotmc import ConfigError
from aiotmc.gateway.control import CommandRefusal, GatewayController, Refusal, from_config
from aiotmc.gateway.model import CommandRequest
from aiotmc.sim.devices.psu import SimPsu

CONFIG: dict[str, Any] = {
    "instruments": [{"name": "psu1"}, {"name": "psu2"}],  # the loader's; ignored here
    "control": {
        "timeout": 2.0,
        "operations": [
            {
                "name": "set_voltage",
                "instruments": ["psu1"],
                "command": "VOLT {value}",
                "type": "float",
                "min": 0,
                "max": 30,
                "unit": "V",
                "readback": "VOLT?",
            },
            {
                "name": "set_voltage",
                "instruments": ["psu2"],
                "command": "VOLT {value}",
                "type": "float",
                "min": 0,
                "max": 5,
                "unit": "V",
            },
            {
                "name": "output",
                "command": "OUTP {value}",
                "type": "bool",
                "true": "ON",
                "false": "OFF",
            },
            {"name": "voltage", "command": "MEAS:VOLT?"},
            {"name": "select", "command": "INST {value}", "type": "choice", "choices": ["CH1"]},
        ],
    },
    "roles": [
        {"name": "operator", "users": ["alice"], "allow": ["set_voltage", "output", "voltage"]},
        {"name": "trainee", "users": ["tom"], "allow": ["voltage"], "instruments": ["psu2"]},
        {"name": "admin", "users": ["root"], "allow": ["*"], "scpi": True},
    ],
}


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[tuple[GatewayController, dict[str, SimPsu]]]:
    devices = {"psu1": SimPsu(limits=((30.0, 3.0),)), "psu2": SimPsu(limits=((6.0, 1.0),))}
    async with (
        aiotmc.open("SIM::psu1::x", device=devices["psu1"]) as psu1,
        aiotmc.open("SIM::psu2::x", device=devices["psu2"]) as psu2,
    ):
        open_instruments = {"psu1": psu1, "psu2": psu2}
        controller = from_config(
            CONFIG,
            instrument_for=open_instruments.__getitem__,
            data_dir=tmp_path,
            instruments=["psu1", "psu2", "psu3"],
        )
        yield controller, devices


def request(
    user: str, instrument: str, operation: str, value: Any = None, **kw: Any
) -> CommandRequest:
    roles = kw.pop("roles", None)
    return CommandRequest(
        user=user,
        instrument=instrument,
        operation=operation,
        value=value,
        source="test",
        roles=roles if roles is not None else ("operator",) if user == "alice" else (),
    )


def audit(controller: GatewayController) -> list[dict[str, Any]]:
    assert controller.audit.path is not None
    lines = controller.audit.path.read_text().splitlines()
    return [json.loads(line) for line in lines]


async def test_allowed_operation_runs_and_is_audited(
    bench: tuple[GatewayController, dict[str, SimPsu]], caplog: pytest.LogCaptureFixture
) -> None:
    controller, devices = bench
    with caplog.at_level(logging.INFO, logger="aiotmc.gateway.audit"):
        result = await controller.execute(request("alice", "psu1", "set_voltage", 12.5))
    assert result.ok, result.detail
    assert devices["psu1"].channels[0].voltage == 12.5
    assert float(result.answer or "nan") == 12.5  # the readback
    [entry] = audit(controller)
    assert entry["user"] == "alice" and entry["ok"] is True and entry["command"] == "VOLT 12.5"
    assert entry["operation"] == "set_voltage" and entry["value"] == 12.5
    assert entry["source"] == "test" and entry["time"].endswith("+00:00")
    assert any('"user": "alice"' in r.getMessage() for r in caplog.records)


async def test_limits_are_per_instrument(
    bench: tuple[GatewayController, dict[str, SimPsu]],
) -> None:
    controller, devices = bench
    over = await controller.execute(request("alice", "psu1", "set_voltage", 31))
    assert isinstance(over, CommandRefusal) and over.reason is Refusal.OUT_OF_LIMITS
    assert "above the maximum 30.0 V" in over.detail
    under = await controller.execute(request("alice", "psu1", "set_voltage", -0.1))
    assert isinstance(under, CommandRefusal) and under.reason is Refusal.OUT_OF_LIMITS
    psu2 = await controller.execute(request("alice", "psu2", "set_voltage", 5.5))
    assert isinstance(psu2, CommandRefusal) and psu2.reason is Refusal.OUT_OF_LIMITS
    assert devices["psu1"].channels[0].voltage == 0.0
    assert devices["psu2"].channels[0].voltage == 0.0
    entries = audit(controller)
    assert [e["reason"] for e in entries] == ["out_of_limits"] * 3
    assert all(e["command"] is None for e in entries)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", Refusal.BAD_VALUE),
        (None, Refusal.BAD_VALUE),
        (True, Refusal.BAD_VALUE),
        ("5;*RST", Refusal.BAD_VALUE),
        (float("inf"), Refusal.BAD_VALUE),
        ("7.5", None),
    ],
)
async def test_values_are_typed(
    bench: tuple[GatewayController, dict[str, SimPsu]], value: Any, reason: Refusal | None
) -> None:
    controller, devices = bench
    result = await controller.execute(request("alice", "psu1", "set_voltage", value))
    if reason is None:
        assert result.ok and devices["psu1"].channels[0].voltage == 7.5
    else:
        assert isinstance(result, CommandRefusal) and result.reason is reason
        assert devices["psu1"].channels[0].voltage == 0.0


async def test_bool_choice_and_query_operations(
    bench: tuple[GatewayController, dict[str, SimPsu]],
) -> None:
    controller, devices = bench
    assert (await controller.execute(request("alice", "psu1", "output", True))).ok
    assert devices["psu1"].channels[0].output is True
    bad = await controller.execute(request("alice", "psu1", "output", "ON"))
    assert isinstance(bad, CommandRefusal) and bad.reason is Refusal.BAD_VALUE
    measured = await controller.execute(request("alice", "psu1", "voltage"))
    assert measured.ok and measured.answer is not None and float(measured.answer) == 0.0
    extra = await controller.execute(request("alice", "psu1", "voltage", 3))
    assert isinstance(extra, CommandRefusal) and extra.reason is Refusal.BAD_VALUE
    # An admin may use "select" (allow "*"); its value must be one of the choices.
    ok = await controller.execute(request("root", "psu1", "select", "CH1", roles=("admin",)))
    assert ok.ok
    no = await controller.execute(request("root", "psu1", "select", "CH9", roles=("admin",)))
    assert isinstance(no, CommandRefusal) and no.reason is Refusal.BAD_VALUE


async def test_refusals_are_typed_and_audited(
    bench: tuple[GatewayController, dict[str, SimPsu]],
) -> None:
    controller, devices = bench
    cases = [
        (request("mallory", "psu1", "set_voltage", 1.0), Refusal.NOT_ALLOWED),
        (request("tom", "psu1", "voltage", roles=("trainee",)), Refusal.NOT_ALLOWED),
        (request("alice", "psu1", "scpi", "*RST"), Refusal.NOT_ALLOWED),
        (request("alice", "psu1", "select", "CH1"), Refusal.NOT_ALLOWED),
        (request("alice", "psu1", "set_current", 1.0), Refusal.NOT_ALLOWED),
        (request("root", "psu1", "set_current", 1.0, roles=("admin",)), Refusal.UNKNOWN_OPERATION),
        (request("alice", "psu3", "voltage"), Refusal.UNAVAILABLE),
        (request("alice", "psu1", "set_voltage", 1.0, roles=("nosuchrole",)), Refusal.NOT_ALLOWED),
    ]
    for req, reason in cases:
        result = await controller.execute(req)
        assert isinstance(result, CommandRefusal), req
        assert result.reason is reason, (req, result)
        assert not result.ok
    assert [e["reason"] for e in audit(controller)] == [r.value for _, r in cases]
    assert devices["psu1"].channels[0].voltage == 0.0
    # The trainee may measure psu2 only.
    assert (await controller.execute(request("tom", "psu2", "voltage", roles=("trainee",)))).ok


async def test_raw_scpi_for_admins_only(bench: tuple[GatewayController, dict[str, SimPsu]]) -> None:
    controller, devices = bench
    idn = await controller.execute(request("root", "psu1", "scpi", "*IDN?", roles=("admin",)))
    assert idn.ok and idn.answer is not None and "SIM-PSU" in idn.answer
    wrote = await controller.execute(request("root", "psu1", "scpi", "VOLT 2", roles=("admin",)))
    assert wrote.ok and devices["psu1"].channels[0].voltage == 2.0
    multi = await controller.execute(
        request("root", "psu1", "scpi", "VOLT 3\nVOLT 4", roles=("admin",))
    )
    assert isinstance(multi, CommandRefusal) and multi.reason is Refusal.BAD_VALUE
    assert controller.roles_of("root") == ("admin",) and controller.roles_of("nobody") == ()


async def test_instrument_errors_and_timeouts_are_failures(tmp_path: Path) -> None:
    device = SimPsu(limits=((30.0, 3.0),))
    config = {
        "control": {
            "timeout": 0.2,
            "check_errors": True,
            "operations": [
                {"name": "set", "command": "VOLT {value}", "type": "float"},
                {"name": "hang", "command": "NO:SUCH:QUERY?"},
            ],
        },
        "roles": [{"name": "admin", "users": ["root"], "allow": ["*"]}],
    }
    async with aiotmc.open("SIM::psu::x", device=device) as psu:
        controller = from_config(config, instrument_for=lambda name: psu, data_dir=tmp_path)
        bad = await controller.execute(request("root", "psu", "set", 99.0, roles=("admin",)))
        assert isinstance(bad, CommandRefusal) and bad.reason is Refusal.FAILED
        assert "InstrumentError" in bad.detail
        hung = await controller.execute(request("root", "psu", "hang", roles=("admin",)))
        assert isinstance(hung, CommandRefusal) and hung.reason is Refusal.FAILED
        # After both, the instrument still works.
        good = await controller.execute(request("root", "psu", "set", 1.0, roles=("admin",)))
        assert good.ok, good.detail
    assert [e["ok"] for e in audit(controller)] == [False, False, True]


@pytest.mark.parametrize(
    ("patch", "key", "message"),
    [
        ({"control": {"timeout": 0}}, ("control", "timeout"), "positive"),
        (
            {"control": {"operations": [{"name": "x", "command": "VOLT {value}"}]}},
            ("control", "operations", 0, "command"),
            "type = 'none' takes no",
        ),
        (
            {"control": {"operations": [{"name": "x", "command": "VOLT", "type": "float"}]}},
            ("control", "operations", 0, "command"),
            "needs a {value}",
        ),
        (
            {
                "control": {
                    "operations": [{"name": "x", "command": "V {value.__class__}", "type": "int"}]
                }
            },
            ("control", "operations", 0, "command"),
            "only placeholder",
        ),
        (
            {
                "control": {
                    "operations": [
                        {"name": "x", "command": "V {value}", "type": "float", "min": 5, "max": 1}
                    ]
                }
            },
            ("control", "operations", 0, "min"),
            "above max",
        ),
        (
            {"control": {"operations": [{"name": "x", "command": "V {value}", "type": "text"}]}},
            ("control", "operations", 0, "type"),
            "one of",
        ),
        (
            {"control": {"operations": [{"name": "a/b", "command": "*RST"}]}},
            ("control", "operations", 0, "name"),
            "name of",
        ),
        (
            {"control": {"operations": [{"name": "scpi", "command": "*RST"}]}},
            ("control", "operations", 0),
            "reserved",
        ),
        (
            {
                "control": {
                    "operations": [{"name": "x", "command": "*RST", "instruments": ["nope"]}]
                }
            },
            ("control", "operations", 0, "instruments", 0),
            "no instrument 'nope'",
        ),
        (
            {
                "control": {
                    "operations": [
                        {"name": "x", "command": "*RST"},
                        {"name": "x", "command": "*CLS"},
                    ]
                }
            },
            ("control", "operations", 1),
            "defined twice",
        ),
        (
            {"control": {"operations": [{"name": "x", "command": "*RST", "colour": 1}]}},
            ("control", "operations", 0, "colour"),
            "unknown field",
        ),
        ({"roles": [{"name": "r", "allow": ["scpi"]}]}, ("roles", 0, "allow", 0), "scpi = true"),
        ({"roles": [{"name": "r", "allow": ["fly"]}]}, ("roles", 0, "allow", 0), "no operation"),
        ({"roles": [{"name": "r", "scpi": "yes"}]}, ("roles", 0, "scpi"), "true or false"),
        ({"roles": [{"name": "r"}, {"name": "r"}]}, ("roles", 1), "defined twice"),
        ({"roles": {"name": "r"}}, ("roles",), "array"),
    ],
)
def test_config_errors_name_the_field(
    patch: dict[str, Any], key: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_config(patch, instrument_for=lambda name: None, instruments=["psu1"])
    assert info.value.key == key


def test_templates_take_format_specs() -> None:
    config = {
        "control": {
            "operations": [
                {"name": "v", "command": "VOLT {value:.3f}", "type": "float", "max": 10},
                {"name": "n", "command": "SWE:POIN {value:d}", "type": "int"},
            ]
        }
    }
    controller = from_config(config, instrument_for=lambda n: None)
    v, n = (controller.operation(name, "any") for name in ("v", "n"))
    assert v is not None and v.render(2) == "VOLT 2.000" and v.render("1.5") == "VOLT 1.500"
    assert n is not None and n.render(401) == "SWE:POIN 401"
    bad = {
        "control": {"operations": [{"name": "o", "command": "OUTP {value:.1f}", "type": "bool"}]}
    }
    with pytest.raises(ConfigError, match="does not take a bool") as info:
        from_config(bad, instrument_for=lambda n: None)
    assert info.value.key == ("control", "operations", 0, "command")


def test_config_key_prefix_and_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        from_config({"control": {"timeout": -1}}, ("gateway",), instrument_for=lambda n: None)
    assert info.value.key == ("gateway", "control", "timeout")
    controller = from_config({}, instrument_for=lambda n: None, data_dir=tmp_path)
    assert controller.audit.path == tmp_path / "audit.jsonl" and controller.operations == ()
