"""The Instrument behaviours through aiotmc.sync, over SIM:: and TCP, on asyncio and trio."""

from __future__ import annotations

import threading

import anyio
import pytest

import aiotmc
import aiotmc.protocol.ieee4882
from aiotmc import StatusByte
from aiotmc.sim.devices import create_device
from aiotmc.sim.server import SimServer
from aiotmc.sync._portal import portal_for

from .conftest import OpenSync


def test_query_identify_and_values(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        assert inst.query("*IDN?").startswith("aiotmc,SIM-DMM")
        assert inst.identify().model == "SIM-DMM"
        assert inst.query_many(["*IDN?", "*OPC?"])[1] == "1"
        inst.write("*IDN?")
        assert inst.read().startswith("aiotmc,")
        inst.write_raw(b"*IDN?\n")
        assert inst.read_raw().startswith(b"aiotmc,")
        values = inst.query_values("READ?")
        assert values and all(isinstance(v, float) for v in values)


def test_blocks_and_binary_values(open_sync: OpenSync) -> None:
    device = create_device("wavegen")
    payload = bytes(range(256)) * 40
    device.add_raw_query(
        "BLOCk?", lambda args: aiotmc.protocol.ieee4882.encode_block(payload) + b"\n"
    )
    with open_sync(device=device) as inst:
        block = inst.query_block("BLOCk?")
        assert isinstance(block, bytearray)
        assert block == payload
        buffer = bytearray(20_000)
        view = inst.query_block("BLOCk?", into=buffer)
        assert view.obj is buffer
        assert bytes(view) == payload
        values = [(-1) ** i * i * 37 % 32768 for i in range(5000)]
        inst.write_binary_values("DATA:ARB ramp,", values, "h")
        inst.check_errors()
        assert inst.query_binary_values("DATA:ARB? ramp", "h") == values


def test_status_errors_clear_trigger(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        inst.write("*CLS")
        inst.write("BOGUS:COMMand 1")
        assert StatusByte.EAV in inst.read_stb()
        assert [e.code for e in inst.errors()] == [-113]
        inst.write("NOPE")
        with pytest.raises(aiotmc.InstrumentError) as info:
            inst.check_errors()
        assert info.value.code == -113
        inst.trigger()
        inst.clear()
        assert inst.query("*IDN?").startswith("aiotmc,")


def test_timeout_is_typed_and_link_stays_in_step(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        with pytest.raises(aiotmc.ReadTimeout):
            inst.read(timeout=0.05)  # nothing was asked
        inst.timeout = 0.05
        assert inst.timeout == 0.05
        with pytest.raises(aiotmc.ReadTimeout):
            inst.query("*CLS")  # no answer comes
        inst.timeout = 5.0
        assert inst.query("*IDN?").startswith("aiotmc,")


def test_close_is_idempotent_and_closed_instrument_refuses(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        assert not inst.closed
        assert "open" in repr(inst)
    assert inst.closed
    inst.close()
    inst.close()
    with pytest.raises(anyio.ClosedResourceError):
        inst.query("*IDN?")


def test_settings_forward_to_the_async_instrument(open_sync: OpenSync) -> None:
    with open_sync("dmm", read_termination="\n") as inst:
        inst.read_termination = "\n"
        inst.write_termination = "\n"
        inst.encoding = "ascii"
        inst.max_message_size = 1 << 20
        assert inst.instrument.max_message_size == 1 << 20
        assert inst.resource == inst.instrument.resource
        assert inst.transport is inst.instrument.transport
        assert inst.srq_poller is None
        assert inst.query("*IDN?").startswith("aiotmc,")


def test_lock_holds_other_threads_off(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        order: list[str] = []
        other_done = threading.Event()

        def other() -> None:
            inst.query("*IDN?")
            order.append("other")
            other_done.set()

        with inst.lock():
            thread = threading.Thread(target=other)
            thread.start()
            with inst.lock():  # nested in the same thread: passes
                inst.write("*CLS")
            assert inst.query("*OPC?") == "1"
            assert inst.errors() == []  # errors() takes the lock itself: same task, passes
            # the other thread cannot have got in: it waits for the lock
            assert not other_done.is_set()
            order.append("holder")
        assert other_done.wait(10)
        thread.join(10)
        assert order == ["holder", "other"]


def test_calls_from_many_threads_never_cross_answers(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        failures: list[str] = []

        def worker(n: int) -> None:
            for _ in range(20):
                answers = inst.query_many(["*IDN?", "*OPC?"])
                if answers[1] != "1" or not answers[0].startswith("aiotmc,"):
                    failures.append(f"{n}: {answers}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []


def test_service_requests_reach_blocking_code(sync_backend: str) -> None:
    with aiotmc.sync.open("SIM::scope::sync-srq", device=create_device("scope")) as inst:
        inst.write("*CLS;*ESE 1;*SRE 32")
        with inst.service_requests() as events:
            inst.write(":SINGle;*OPC")
            inst.trigger()
            event = events.get(timeout=5)
            assert StatusByte.RQS in event.status
            with pytest.raises(aiotmc.ReadTimeout):
                events.get(timeout=0.01)
        # nothing pending: wait_for_srq times out, typed
        with pytest.raises(aiotmc.ReadTimeout):
            inst.wait_for_srq(timeout=0.01)


def test_service_request_iteration_ends_when_the_instrument_closes(sync_backend: str) -> None:
    with aiotmc.sync.open("SIM::scope::sync-srq2", device=create_device("scope")) as inst:
        inst.write("*CLS;*ESE 1;*SRE 32")
        with inst.service_requests() as events:
            inst.write(":SINGle;*OPC")
            inst.trigger()
            seen = []
            for event in events:
                seen.append(event)
                inst.close()
            assert len(seen) == 1
            with pytest.raises(EOFError):
                events.get(timeout=1)


def test_service_requests_over_tcp_need_polling(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        if inst.transport.srq is not None:
            pytest.skip("this attachment has a native SRQ channel")
        with pytest.raises(aiotmc.UnsupportedOperation, match="srq_poll_interval"):
            inst.service_requests()


def test_operation_complete(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst:
        timing = inst.wait_operation_complete("*CLS", timeout=10)
        assert isinstance(timing, aiotmc.OperationTiming)


def test_operation_context(open_sync: OpenSync) -> None:
    with open_sync("dmm") as inst, inst.operation("*CLS", timeout=10) as op:
        timing = op.wait()
        assert op.timing is timing
        assert isinstance(op.uses_srq, bool)


def test_close_after_the_async_instrument_closed_still_ends_the_open(sync_backend: str) -> None:
    """Closing the async object first must not skip the rest of the open's exit (the poller)."""
    with portal_for(sync_backend).hold(SimServer(create_device("dmm"))) as server:
        inst = aiotmc.sync.open(server.resource, srq_poll_interval=0.05)
        assert inst.srq_poller is not None
        inst._portal.run(inst.instrument.aclose)
        assert inst.closed
        assert inst.srq_poller is not None  # the poller stops with the open's exit...
        inst.close()
        assert inst.srq_poller is None  # ...which close() still ran
        inst.close()
