"""The transport registry: built-in kinds, entry-point plugins, options, availability."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import aiotmc
from aiotmc.registry import (
    FoundResource,
    LinkSettings,
    TransportRegistry,
    TransportSpec,
    registry,
)
from aiotmc.resources import ResourceName, SimInstr
from aiotmc.transports.base import MessageTransport

PLUGIN = '''
"""A third-party transport: DUMMY[board]::name[::INSTR] opens a fresh simulated DMM."""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ClassVar, TypedDict

from aiotmc.registry import FoundResource, TransportSpec
from aiotmc.resources import ResourceName
from aiotmc.sim.devices import create_device
from aiotmc.transports.sim import open_sim_transport

OPENED = []


@dataclass(frozen=True, slots=True)
class DummyName(ResourceName):
    kind: ClassVar[str] = "dummy"
    interface_type: ClassVar[str] = "DUMMY"
    resource_class: ClassVar[str] = "INSTR"
    name: str = ""

    def __str__(self) -> str:
        return f"DUMMY0::{self.name}::INSTR"


def parse(text: str) -> DummyName:
    return DummyName(name=text.split("::")[1])


class Options(TypedDict, total=False):
    colour: str


@asynccontextmanager
async def open_dummy(resource, settings, options):
    OPENED.append((str(resource), settings.read_termination, dict(options)))
    async with open_sim_transport(create_device("dmm"), resource=str(resource)) as link:
        yield link


async def list_dummies():
    return [FoundResource("DUMMY0::one::INSTR", "a dummy")]


TRANSPORT = TransportSpec(
    kind="dummy",
    summary="a test plugin",
    example="DUMMY0::one::INSTR",
    open=open_dummy,
    options=Options,
    list_resources=list_dummies,
    interface_types=("DUMMY",),
    parse=parse,
)
'''


def _install_plugin(root: Path, entry_points: str, module: str | None = PLUGIN) -> None:
    """A distribution on ``root`` (a sys.path entry) with the given entry points."""
    info = root / "dummy_aiotmc_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dummy-aiotmc-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module is not None:
        (root / "dummy_aiotmc_plugin.py").write_text(module)


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A sys.path entry for a plugin; the registry forgets it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload()
    yield tmp_path
    monkeypatch.undo()
    sys.modules.pop("dummy_aiotmc_plugin", None)
    registry.reload()


async def test_a_plugin_registered_by_entry_point_opens_with_aiotmc_open(
    plugin_path: Path,
) -> None:
    _install_plugin(plugin_path, "[aiotmc.transports]\ndummy = dummy_aiotmc_plugin:TRANSPORT\n")
    registry.reload()
    assert "dummy" in registry.kinds()
    async with aiotmc.open("DUMMY0::bench::INSTR", colour="red", read_termination="\n") as inst:
        assert "SIM-DMM" in await inst.query("*IDN?")
        assert inst.resource == "DUMMY0::bench::INSTR"
    plugin = sys.modules["dummy_aiotmc_plugin"]
    assert plugin.OPENED == [("DUMMY0::bench::INSTR", "\n", {"colour": "red"})]
    with pytest.raises(TypeError, match=r"flavour .*\(accepted: colour\)"):
        async with aiotmc.open("DUMMY0::bench::INSTR", flavour="x"):
            pass  # pragma: no cover
    found = await aiotmc.discover()
    assert FoundResource("DUMMY0::one::INSTR", "a dummy") in found.found
    assert "DUMMY0::one::INSTR" in await aiotmc.list_resources()
    status = {row.kind: row for row in registry.status()}
    assert status["dummy"].available and status["dummy"].origin.startswith("dummy_aiotmc")


async def test_a_plugin_that_cannot_load_is_reported_not_raised(plugin_path: Path) -> None:
    _install_plugin(
        plugin_path, "[aiotmc.transports]\nsim2 = no_such_module_here:TRANSPORT\n", module=None
    )
    registry.reload()
    status = {row.kind: row for row in registry.status()}
    assert not status["sim2"].available
    assert "no_such_module_here" in (status["sim2"].reason or "")
    assert status["sim"].available  # the others still work
    found = await aiotmc.discover()
    assert "no_such_module_here" in found.problems["sim2"]
    with pytest.raises(aiotmc.UnsupportedOperation, match="cannot be loaded"):
        registry.get("sim2")


def test_an_entry_point_cannot_replace_a_built_in(plugin_path: Path) -> None:
    _install_plugin(plugin_path, "[aiotmc.transports]\nsim = dummy_aiotmc_plugin:TRANSPORT\n")
    registry.reload()
    assert registry.get("sim").summary.startswith("simulated instrument")


def test_a_spec_must_declare_the_kind_it_is_registered_for(plugin_path: Path) -> None:
    _install_plugin(plugin_path, "[aiotmc.transports]\nother = dummy_aiotmc_plugin:TRANSPORT\n")
    registry.reload()
    with pytest.raises(aiotmc.UnsupportedOperation, match="declares kind 'dummy'"):
        registry.get("other")


@asynccontextmanager
async def _open_nothing(
    resource: ResourceName, settings: LinkSettings, options: Mapping[str, Any]
) -> AsyncIterator[MessageTransport]:
    raise AssertionError("not opened in these tests")  # pragma: no cover
    yield  # pragma: no cover


async def _failing_discovery() -> list[FoundResource]:
    raise OSError("bus on fire")


async def test_registration_in_code_and_failing_discovery() -> None:
    local = TransportRegistry({}, group=None)
    spec = TransportSpec(
        kind="sim",
        summary="replacement",
        example="SIM::x",
        open=_open_nothing,
        list_resources=_failing_discovery,
        unavailable=lambda: None,
    )
    local.register(spec)
    with pytest.raises(ValueError, match="already registered"):
        local.register(spec)
    local.register(spec, replace=True)
    assert local.for_resource("SIM::dmm") == (SimInstr(model="dmm"), spec)
    result = await local.discover()
    assert result.found == [] and result.problems == {
        "sim": "cannot list sim resources: OSError: bus on fire"
    }
    local.unregister("sim")
    with pytest.raises(aiotmc.UnsupportedOperation, match=r"SIM::dmm: .*not implemented yet"):
        local.for_resource("SIM::dmm")


def test_unavailable_checks_that_fail_say_so() -> None:
    def broken() -> str | None:
        raise RuntimeError("probe crashed")

    local = TransportRegistry({}, group=None)
    local.register(
        TransportSpec(kind="x", summary="", example="", open=_open_nothing, unavailable=broken)
    )
    (row,) = local.status()
    assert row.reason == "availability check failed: RuntimeError: probe crashed"


def test_built_in_options_are_declared() -> None:
    assert registry.get("usb").option_names == {"quirks", "driver", "pipeline"}
    assert registry.get("sim").option_names == {"device"}
    assert registry.get("tcpip-socket").option_names == frozenset()


def test_import_aiotmc_imports_no_transport() -> None:
    code = (
        "import sys, aiotmc, aiotmc.registry; "
        "print(sorted(m for m in sys.modules if m.startswith('aiotmc.transports.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['aiotmc.transports.base', 'aiotmc.transports.spec']"


def test_no_transport_option_is_shadowed_by_aiotmc_open() -> None:
    """An option named like one of aiotmc.open's own parameters could never reach it."""
    import inspect

    from aiotmc._open import open as aiotmc_open

    own = {
        name
        for name, p in inspect.signature(aiotmc_open).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert "max_message_size" in own
    for kind in registry.kinds():
        assert registry.get(kind).option_names & own == set(), kind
