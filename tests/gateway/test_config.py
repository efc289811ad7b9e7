"""The config loader: every error names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiotmc import ConfigError
from aiotmc.gateway.config import load_config, parse_config
from aiotmc.gateway.plugins import PLUGINS, Plugin, resolve
from aiotmc.gateway.sinks.sqlite import SqliteSink

GOOD = """\
[gateway]
site = "lab1"
host = "bench"
data_dir = "state"

[[instruments]]
name = "dmm"
resource = "SIM::dmm"
tags = { room = "b12" }
setup = ['*CLS', \"\"\"*SRE 32\"\"\"]

  [[instruments.channels]]
  name = "volts"
  query = "MEAS:VOLT?"
  unit = "V"
  period = 0.5

  [[instruments.channels]]
  name = "done"
  query = "FETC?"
  on_srq = true
  arm = "INIT;*OPC"

[[instruments]]
name = "psu"
resource = "TCPIP0::127.0.0.1::5025::SOCKET"
options = { srq_poll_interval = 0.1, read_termination = "\\n" }

  [[instruments.channels]]
  name = "v"
  query = "VOLT?"
  parse = "str"
  period = 2
"""


def test_a_good_config_is_built_with_defaults(tmp_path: Path) -> None:
    file = tmp_path / "gw.toml"
    file.write_text(GOOD)
    config = load_config(file)
    assert config.gateway.site == "lab1"
    assert config.gateway.host == "bench"
    assert config.gateway.id == "bench"  # defaults to the host
    assert config.gateway.data_dir == tmp_path / "state"  # relative to the file
    dmm, psu = config.instruments
    assert dmm.tags == {"room": "b12"}
    assert dmm.setup == ("*CLS", "*SRE 32")
    volts, done = dmm.channels
    assert (volts.period, volts.unit, volts.parse) == (0.5, "V", "float")
    assert volts.stale_after == max(3 * 0.5, 0.5 + dmm.timeout)
    assert done.on_srq and done.period is None and done.stale_after is None
    assert done.arm == "INIT;*OPC"
    assert psu.options == {"srq_poll_interval": 0.1, "read_termination": "\n"}
    assert psu.channels[0].parse == "str"
    # no [[sinks]]: the local SQLite database under data_dir
    (sink,) = config.sinks
    assert isinstance(sink, SqliteSink)
    assert sink.path == tmp_path / "state" / "readings.sqlite"
    assert config.components == () and config.controller is None
    assert config.gateway.spool_commit_interval is None  # the program's default


def test_the_spool_commit_interval_is_a_duration(tmp_path: Path) -> None:
    file = tmp_path / "gw.toml"
    file.write_text(GOOD.replace('site = "lab1"', 'site = "lab1"\nspool_commit_interval = "10ms"'))
    assert load_config(file).gateway.spool_commit_interval == pytest.approx(0.01)


def _error(text: str, tmp_path: Path) -> ConfigError:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    return info.value


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The line that is ``needle`` (else the ones containing it), 1-based."""
    numbered = list(enumerate(text.splitlines(), 1))
    exact = [i for i, line in numbered if line.strip() == needle.strip()]
    return (exact or [i for i, line in numbered if needle in line])[occurrence - 1]


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "reason"),
    [
        ("period = 2", "period = 0", "period = 0", "instruments[1].channels[0].period", "0.001"),
        (
            'parse = "str"',
            'parse = "hex"',
            'parse = "hex"',
            "instruments[1].channels[0].parse",
            "expected one of",
        ),
        (
            'resource = "SIM::dmm"',
            'resource = "TCPIP::::SOCK"',
            "TCPIP::::SOCK",
            "instruments[0].resource",
            "invalid resource name",
        ),
        (
            "srq_poll_interval = 0.1",
            "bogus = 1",
            "bogus = 1",
            "instruments[1].options.bogus",
            "unexpected option",
        ),
        (
            "srq_poll_interval = 0.1",
            "reconnect = true",
            "reconnect = true",
            "instruments[1].options.reconnect",
            "reconnects itself",
        ),
        (
            '  unit = "V"',
            '  unit = "V"\n  colour = "red"',
            "colour",
            "instruments[0].channels[0].colour",
            "unknown field 'colour'",
        ),
        ('name = "psu"', 'name = "dmm"', ('name = "dmm"', 2), "instruments[1].name", "duplicate"),
        ('name = "psu"', 'name = "p/s u"', 'name = "p/s u"', "instruments[1].name", "MQTT topics"),
        (
            "  on_srq = true",
            "  on_srq = true\n  period = 1",
            "period = 1",
            "instruments[0].channels[1].period",
            "either",
        ),
        (
            '  arm = "INIT;*OPC"',
            "",
            ("[[instruments.channels]]", 2),
            "instruments[0].channels[1].period",
            "missing 'period'",
        ),
        ('site = "lab1"', "site = 3", "site = 3", "gateway.site", "expected a string"),
        (
            'site = "lab1"',
            'site = "lab1"\nspool_commit_interval = "2s"',
            "spool_commit_interval",
            "gateway.spool_commit_interval",
            "at most 1 s",
        ),
        (
            'tags = { room = "b12" }',
            "tags = { room = 12 }",
            "tags =",
            "instruments[0].tags.room",
            "strings",
        ),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str | tuple[str, int], field: str, reason: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if not new:  # removing 'arm' keeps the channel valid: break it another way
        text = text.replace("  on_srq = true\n", "")
    error = _error(text, tmp_path)
    assert error.path == str(tmp_path / "bad.toml")
    at, occurrence = needle if isinstance(needle, tuple) else (needle, 1)
    assert error.line == _line_of(text, at, occurrence)
    message = str(error)
    assert message.startswith(f"{tmp_path / 'bad.toml'}:{error.line}: {field}: "), message
    assert reason in message


def test_on_srq_over_a_raw_socket_needs_polling(tmp_path: Path) -> None:
    text = GOOD.replace("srq_poll_interval = 0.1, ", "").replace("  period = 2", "  on_srq = true")
    error = _error(text, tmp_path)
    assert error.key == ("instruments", 1, "channels", 0, "on_srq")
    assert error.line == _line_of(text, "on_srq = true", 2)
    assert "no service-request channel: set options.srq_poll_interval" in str(error)
    (tmp_path / "ok.toml").write_text(GOOD.replace("  period = 2", "  on_srq = true"))
    assert load_config(tmp_path / "ok.toml").instruments[1].channels[0].on_srq


def test_a_missing_field_points_at_its_table(tmp_path: Path) -> None:
    text = GOOD.replace('  query = "VOLT?"\n', "")
    error = _error(text, tmp_path)
    assert error.key == ("instruments", 1, "channels", 0, "query")
    # the table that lacks it: the last [[instruments.channels]] header
    assert error.line == _line_of(text, "[[instruments.channels]]", 3)
    assert "missing required field 'query'" in str(error)


def test_toml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("period = 0.5", "period = = 0.5")
    error = _error(text, tmp_path)
    assert error.line == _line_of(text, "period = = 0.5")
    assert "TOML syntax error" in str(error)


def test_unknown_section_and_sink_type(tmp_path: Path) -> None:
    error = _error(GOOD + "\n[mqttt]\nhost = 'x'\n", tmp_path)
    assert error.key == ("mqttt",) and error.line == _line_of(GOOD + "\n[mqttt]\n", "[mqttt]")
    text = GOOD + '\n[[sinks]]\ntype = "sqlite"\n\n[[sinks]]\ntype = "cassandra"\n'
    error = _error(text, tmp_path)
    assert error.key == ("sinks", 1, "type")
    assert error.line == _line_of(text, '"cassandra"')
    assert "known: " in str(error) and "sqlite" in str(error)


def test_sinks_are_built_and_named_uniquely(tmp_path: Path) -> None:
    text = GOOD + '\n[[sinks]]\ntype = "sqlite"\npath = "/abs/r.db"\n\n[[sinks]]\ntype = "sqlite"\n'
    error = _error(text, tmp_path)
    assert "duplicate sink name 'sqlite'" in str(error)
    text = text.rstrip("\n") + '\nname = "local2"\n'
    (tmp_path / "ok.toml").write_text(text)
    config = load_config(tmp_path / "ok.toml")
    assert [s.name for s in config.sinks] == ["sqlite", "local2"]
    assert [getattr(s, "path", None) for s in config.sinks] == [
        Path("/abs/r.db"),
        tmp_path / "state" / "readings.sqlite",
    ]


def test_a_missing_part_is_a_config_error_not_an_import_error(tmp_path: Path) -> None:
    plugin = Plugin(("mqtt",), None, "aiotmc.gateway.not_there:Thing.from_config", "component")
    with pytest.raises(ConfigError, match=r"needs aiotmc\.gateway\.not_there.*pip install"):
        resolve(plugin, ("mqtt",))
    plugin = Plugin(("mqtt",), None, "aiotmc.gateway.config:Nothing.from_config", "component")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(plugin, ("mqtt",))


def test_every_plugin_row_is_well_formed() -> None:
    seen = set()
    for plugin in PLUGINS:
        module, _, attribute = plugin.target.partition(":")
        assert module.startswith("aiotmc.gateway.") and attribute
        assert plugin.kind in ("sink", "component", "controller")
        if plugin.type is not None:
            assert len(plugin.sections) == 1
        row = (plugin.sections, plugin.type)
        assert row not in seen
        seen.add(row)


def test_a_part_that_raises_config_error_gets_located(tmp_path: Path) -> None:
    # SqliteSink.from_config is a plug-in factory like any other: its own errors are located
    text = GOOD + '\n[[sinks]]\ntype = "sqlite"\npath = 7\n'
    error = _error(text, tmp_path)
    assert error.key == ("sinks", 0, "path") and error.line == _line_of(text, "path = 7")


def test_parse_config_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^<config>:2: gateway\.bogus: unknown field"):
        parse_config("[gateway]\nbogus = 1\n")


def test_factories_get_the_context_they_declare(tmp_path: Path) -> None:
    from aiotmc.gateway.plugins import call

    seen: dict[str, object] = {}

    def wants_some(section: object, key: object, *, data_dir: Path) -> str:
        seen.update(section=section, key=key, data_dir=data_dir)
        return "built"

    def wants_all(section: object, key: object, **context: object) -> str:
        seen.update(context)
        return "all"

    context = {"data_dir": tmp_path, "instruments": ("dmm",), "gateway": None}
    assert call(wants_some, {"a": 1}, ("x",), context) == "built"
    assert seen == {"section": {"a": 1}, "key": ("x",), "data_dir": tmp_path}
    assert call(wants_all, {}, (), context) == "all"
    assert seen["instruments"] == ("dmm",)


def test_the_directory_knows_only_configured_instruments(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text(GOOD)
    directory = load_config(tmp_path / "gw.toml").directory
    assert directory("dmm") is None  # configured, not open
    with pytest.raises(LookupError, match="no instrument named 'nope'"):
        directory("nope")


def test_the_demo_is_the_example_file(tmp_path: Path) -> None:
    from aiotmc.gateway.demo import DEMO_CONFIG, demo_config

    example = Path(__file__).parents[2] / "examples" / "gateway" / "demo.toml"
    assert example.read_text() == DEMO_CONFIG
    demo, _ = demo_config(tmp_path, web=False)
    assert load_config(example).instruments == demo.instruments
    other, _ = demo_config(tmp_path / "it's", web=False)
    assert other.gateway.data_dir == (tmp_path / "it's").resolve()


class _Part:
    def __init__(self, name: str, **seen: object) -> None:
        self.name = name
        self.seen = seen

    async def run(self, hub: object, *, task_status: object) -> None:  # pragma: no cover
        pass

    async def execute(self, request: object) -> object:  # pragma: no cover
        pass


def test_parts_plug_in_by_their_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from aiotmc.gateway.config import GatewaySettings

    def module(name: str, **attributes: object) -> None:
        fake = types.ModuleType(name)
        fake.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, fake)

    def mqtt(section: object, key: object, *, config_dir: Path) -> _Part:
        return _Part("mqtt", section=section, key=key, config_dir=config_dir)

    def control(section: object, key: object, *, instrument_for: object, data_dir: Path) -> _Part:
        if section["roles"][0].get("allow") == "bad":  # type: ignore[index]
            raise ConfigError("expected an array", key=("roles", 0, "allow"))
        return _Part("control", section=section, instrument_for=instrument_for, data_dir=data_dir)

    def web(section: object, key: object) -> _Part:
        return _Part("web", section=section, key=key)

    def notifier(section: object, key: object, gateway: GatewaySettings) -> _Part:
        return _Part(f"notify-{key[1]}", section=section, gateway=gateway)  # type: ignore[index]

    module("aiotmc.gateway.mqtt", from_config=mqtt)
    module("aiotmc.gateway.control", from_config=control)
    module("aiotmc.gateway.web", from_config=web)
    module("aiotmc.gateway.alerts", notifier_from_config=notifier)
    text = (
        GOOD
        + """
[mqtt]
host = "broker"

[[roles]]
name = "operator"

[control]
audit_log = "audit.jsonl"

[web]
port = 8080

[[users]]
name = "alice"

[[notifiers]]
type = "pager"
"""
    )
    (tmp_path / "gw.toml").write_text(text)
    config = load_config(tmp_path / "gw.toml")
    parts = {c.name: c for c in config.components}
    # the controller has a run method too: the gateway runs it as a component as well
    assert set(parts) == {"mqtt", "web", "notify-0", "control"}
    assert parts["control"] is config.controller
    assert isinstance(parts["mqtt"], _Part) and parts["mqtt"].seen == {
        "section": {"mqtt": {"host": "broker"}},
        "key": (),
        "config_dir": tmp_path,
    }
    assert isinstance(parts["web"], _Part)
    assert parts["web"].seen == {
        "section": {"web": {"port": 8080}, "users": [{"name": "alice"}]},
        "key": (),
    }
    controller = config.controller
    assert isinstance(controller, _Part) and controller.seen["data_dir"] == tmp_path / "state"
    assert controller.seen["instrument_for"] is config.directory
    assert controller.seen["section"] == {
        "roles": [{"name": "operator"}],
        "control": {"audit_log": "audit.jsonl"},
    }
    assert isinstance(parts["notify-0"], _Part)
    assert parts["notify-0"].seen["gateway"] == config.gateway
    # a part's own error is located like any other
    bad = text.replace('name = "operator"', 'name = "operator"\nallow = "bad"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.toml")
    assert info.value.line == _line_of(bad, 'allow = "bad"')
    assert str(info.value).endswith("roles[0].allow: expected an array")
