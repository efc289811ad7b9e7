"""I/O tracing: the ``aiotmc`` and ``aiotmc.io`` loggers, and ``log_to_screen``."""

from __future__ import annotations

import io
import logging

import pytest

import aiotmc
from aiotmc._log import show
from aiotmc.protocol.ieee4882 import encode_block
from aiotmc.sim.devices import create_device

from .conftest import OpenSim


def test_show_text_binary_and_truncation() -> None:
    assert show(b"*IDN?\n") == repr("*IDN?\n")
    assert show(b"x" * 300).endswith("... (300 bytes)")
    binary = show(b"#14\x00\xff\x80\x01\n")
    assert binary.startswith("<8 bytes: 23 31 34 00 ff")
    assert show(bytes(range(256))).endswith(" ...>")
    assert show(memoryview(b"\xc3\xa9")) == "<2 bytes: c3 a9>"  # never decoded


async def test_io_logged_at_debug(open_sim: OpenSim, caplog: pytest.LogCaptureFixture) -> None:
    device = create_device("scope")
    device.add_raw_query("B?", lambda args: encode_block(bytes(range(200))) + b"\n")
    with caplog.at_level(logging.DEBUG, logger="aiotmc"):
        async with open_sim(device=device) as inst:
            await inst.query("*IDN?")
            await inst.query_block("B?")
            await inst.write("*CLS")
            with pytest.raises(aiotmc.ReadTimeout):
                await inst.query("*CLS", timeout=0.05)
    io_lines = [r.getMessage() for r in caplog.records if r.name == "aiotmc.io"]
    resource = inst.resource
    assert f"{resource} write {'*IDN?' + chr(10)!r}" in io_lines
    assert any(line.startswith(f"{resource} read '") and "," in line for line in io_lines)
    assert f"{resource} read block <200 bytes: 00 01 02" in "\n".join(io_lines)
    main = [r.getMessage() for r in caplog.records if r.name == "aiotmc"]
    assert any("query '*CLS' failed: ReadTimeout" in line for line in main)
    assert main[0].endswith(": open") and main[-1].endswith(": close")


async def test_nothing_logged_when_disabled(
    open_sim: OpenSim, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="aiotmc"):
        async with open_sim("dmm") as inst:
            await inst.query("*IDN?")
    assert not [r for r in caplog.records if r.name == "aiotmc.io"]


def test_log_to_screen_replaces_its_handler() -> None:
    logger = logging.getLogger("aiotmc")
    before = list(logger.handlers), logger.level
    try:
        stream = io.StringIO()
        first = aiotmc.log_to_screen(stream=stream)
        second = aiotmc.log_to_screen(logging.INFO, stream=stream)
        assert first not in logger.handlers and second in logger.handlers
        assert logger.level == logging.INFO
        logging.getLogger("aiotmc.io").debug("hidden")
        logger.info("shown")
        assert "aiotmc INFO shown" in stream.getvalue() and "hidden" not in stream.getvalue()
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
