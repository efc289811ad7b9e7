"""SyncInstrument offers every public member of aiotmc.Instrument, signature-compatible.

Generic on purpose: a method added to Instrument shows up here as a failure until the
blocking class has it too.
"""

from __future__ import annotations

import inspect

import pytest

import aiotmc
from aiotmc.sim.devices import create_device
from aiotmc.sync import SyncInstrument

RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def _public(cls: type) -> list[str]:
    return sorted(n for n in vars(cls) if not n.startswith("_") or n in RENAMED)


def _params(func: object) -> list[tuple[str, object, object, object]]:
    sig = inspect.signature(func)  # type: ignore[arg-type]
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in sig.parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("name", _public(aiotmc.Instrument))
def test_every_public_member_has_a_blocking_form(name: str) -> None:
    member = inspect.getattr_static(aiotmc.Instrument, name)
    target = RENAMED.get(name, name)
    assert hasattr(SyncInstrument, target), f"SyncInstrument lacks {target}"
    mine = inspect.getattr_static(SyncInstrument, target)
    if isinstance(member, property):
        assert isinstance(mine, property)
        assert (member.fset is None) == (mine.fset is None), f"{name}: settable differs"
        return
    assert callable(mine)
    assert not inspect.iscoroutinefunction(mine), f"{target} must block, not be async"
    if name in RENAMED:
        return
    assert _params(mine) == _params(member), f"{name}: parameters differ"


def test_every_public_attribute_has_a_blocking_form() -> None:
    """Attributes set in Instrument.__init__ (timeout, encoding...) are forwarded."""
    with aiotmc.sync.open("SIM::sync::attrs", device=create_device("dmm")) as inst:
        names = [n for n in vars(inst.instrument) if not n.startswith("_")]
        assert "encoding" in names and isinstance(SyncInstrument.timeout, property)
        missing = [n for n in names if not isinstance(getattr(SyncInstrument, n, None), property)]
        assert missing == []
