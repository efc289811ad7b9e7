"""The IEEE 488.2 model of SimDevice: status byte, ESR, error queue, OPC, latency, faults."""

from __future__ import annotations

import logging

import pytest

from aiotmc import EventStatus, StatusByte
from aiotmc.sim import Call, Later, Response, SimDevice, command


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Worker(SimDevice):
    """A device with an overlapped operation (START <seconds>) for OPC tests."""

    resets = 0
    stored: bytes = b""

    def reset(self) -> None:
        super().reset()
        self.resets += 1
        self.level = 0.0

    @command("STARt", args=(0, 1))
    def _start(self, call: Call) -> Response:
        seconds = call.number(0) if call.args else 1.0
        self.start_operation(seconds, on_complete=self._done)
        return None

    @command("ARM")
    def _arm(self, call: Call) -> Response:
        self.start_operation(0.5, wait_for_trigger=True, on_complete=self._done)
        return None

    def _done(self) -> None:
        self.level += 1

    @command("[SOURce#:]LEVel", args=1)
    def _level(self, call: Call) -> Response:
        self.level = call.number(0, minimum=0.0, maximum=10.0) + 100 * call.suffix(0, default=0)
        return None

    @command("[SOURce#:]LEVel?")
    def _level_query(self, call: Call) -> Response:
        return self.level

    @command("RESult?")
    def _result(self, call: Call) -> Response:
        return Later(lambda: self.level)

    @command("DATA", args=1)
    def _data(self, call: Call) -> Response:
        self.stored = call.block(0).tobytes()
        return None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dev(clock: FakeClock) -> Worker:
    return Worker(clock=clock)


def ask(device: SimDevice, message: str) -> str:
    device.write(message.encode() + b"\n")
    response = device.read()
    assert response is not None, f"no response to {message!r}"
    assert response.endswith(b"\n")
    return response[:-1].decode()


def codes(device: SimDevice) -> list[int]:
    return [code for code, _ in device.errors]


# -- messages -----------------------------------------------------------------------------------


def test_idn_and_identity() -> None:
    assert ask(SimDevice(), "*IDN?") == "aiotmc,SIM-DEVICE,0000,0.1"
    assert ask(SimDevice(identity="ACME,X1,42,1.0"), "*idn?") == "ACME,X1,42,1.0"


def test_compound_responses_are_joined_with_semicolons(dev: Worker) -> None:
    assert ask(dev, "*ESE 4;*ESE?;LEV 2.5;LEV?;*IDN?") == "4;+2.500000000E+00;" + dev.identity


def test_relative_headers_and_root_reset(dev: Worker) -> None:
    # SYST:ERR:COUN? then relative NEXT? under SYST:ERR, common command keeps the path
    assert ask(dev, "SYST:ERR:COUN?;*ESE?;NEXT?;:SYST:VERS?") == '0;0;+0,"No error";1999.0'
    # relative path with a suffix: SOUR2:LEV 1 then LEV? under SOUR2
    assert ask(dev, "SOUR2:LEV 1;LEV?") == "+2.010000000E+02"
    assert dev.errors == []


def test_unknown_header_is_113_and_rest_of_message_runs(dev: Worker) -> None:
    assert ask(dev, "BOGUS?;*ESE?") == "0"
    assert dev.errors == [(-113, "Undefined header; BOGUS?")]
    assert dev.event_status & EventStatus.CME
    assert dev.status_byte & StatusByte.EAV
    assert ask(dev, "SYST:ERR?") == '-113,"Undefined header; BOGUS?"'
    assert ask(dev, "SYST:ERR:NEXT?") == '+0,"No error"'
    assert not dev.status_byte & StatusByte.EAV


def test_command_form_of_a_query_only_header_is_undefined(dev: Worker) -> None:
    dev.write(b"*IDN")
    assert dev.read() is None
    assert codes(dev) == [-113]


@pytest.mark.parametrize(
    ("message", "code", "bit"),
    [
        ("*ESE", -109, EventStatus.CME),
        ("*IDN? 1", -108, EventStatus.CME),
        ("*ESE abc", -104, EventStatus.CME),
        ("*ESE 256", -222, EventStatus.EXE),
        ("LEV 11", -222, EventStatus.EXE),
        ("SOUR0:LEV 1", -114, EventStatus.CME),
        ("DATA #15ab", -161, EventStatus.CME),
    ],
)
def test_parameter_errors(dev: Worker, message: str, code: int, bit: EventStatus) -> None:
    dev.write(message.encode())
    assert codes(dev) == [code]
    assert dev.event_status == bit


def test_error_queue_overflow(dev: Worker) -> None:
    for i in range(25):
        dev.push_error(-200 - i, f"err {i}")
    errors = dev.errors
    assert len(errors) == 20
    assert errors[:19] == [(-200 - i, f"err {i}") for i in range(19)]
    assert errors[19] == (-350, "Queue overflow")
    assert ask(dev, "SYST:ERR:COUN?") == "20"
    assert ask(dev, "SYST:ERR?") == '-200,"err 0"'


def test_push_error_sets_esr_bit_by_class(dev: Worker) -> None:
    expected = {
        -100: EventStatus.CME,
        -200: EventStatus.EXE,
        -300: EventStatus.DDE,
        -400: EventStatus.QYE,
        105: EventStatus.DDE,
    }
    for code, bit in expected.items():
        dev.write(b"*CLS")
        dev.push_error(code, "x")
        assert dev.event_status == bit, code


def test_block_argument_with_newlines_and_semicolons(dev: Worker) -> None:
    payload = bytes(range(256)) + b"\n;\n"
    dev.write(b"DATA #3%03d%s;*OPC?\n" % (len(payload), payload))
    assert dev.read() == b"1\n"
    assert dev.stored == payload
    assert dev.errors == []


def test_raw_query_fault_hook(dev: Worker) -> None:
    dev.add_raw_query("GARBage?", lambda args: b"#9999999999\n")
    dev.add_raw_query("NOTErm?", lambda args: b"no terminator " + b",".join(args))
    assert ask(dev, "GARB?") == "#9999999999"
    dev.write(b"*IDN?;NOTE? a,b")
    assert dev.read() == dev.identity.encode() + b";no terminator a,b"


def test_add_command_overrides_class_command(dev: Worker) -> None:
    dev.add_command("*IDN?", lambda call: "patched")
    dev.add_command("ECHO?", lambda call: call.text(0), args=1)
    assert ask(dev, "*IDN?;ECHO? hello") == "patched;hello"
    assert "ECHO?" in dev.commands


def test_empty_message_does_nothing(dev: Worker) -> None:
    dev.write(b"*IDN?")
    dev.write(b"\n")
    assert dev.read() == dev.identity.encode() + b"\n"
    assert dev.errors == []


# -- status byte and registers -------------------------------------------------------------


def test_mav_follows_the_output_queue(dev: Worker) -> None:
    assert dev.status_byte == 0
    dev.write(b"*IDN?")
    assert dev.status_byte == StatusByte.MAV
    dev.read()
    assert dev.status_byte == 0
    assert dev.read() is None  # nothing to read: no error recorded
    assert dev.errors == []


def test_stb_query_reports_mss_and_not_its_own_mav(dev: Worker) -> None:
    assert ask(dev, "*STB?") == "0"
    dev.push_error(-100, "x")
    assert ask(dev, "*ESE 32;*SRE 32;*STB?") == str(0x04 | 0x20 | 0x40)


def test_sre_and_ese_registers(dev: Worker) -> None:
    assert ask(dev, "*SRE 255;*SRE?") == "191"  # bit 6 cannot be enabled
    assert ask(dev, "*ESE 255;*ESE?") == "255"
    dev.write(b"*ESE -1;*SRE 256")
    assert codes(dev) == [-222, -222]


def test_esr_is_read_and_clear(dev: Worker) -> None:
    dev.write(b"*OPC")
    assert ask(dev, "*ESR?") == "1"
    assert ask(dev, "*ESR?") == "0"


def test_cls_clears_esr_and_error_queue_but_not_enables(dev: Worker) -> None:
    dev.write(b"*ESE 4;*SRE 16;BOGUS")
    assert dev.errors and dev.event_status
    dev.write(b"*CLS")
    assert dev.errors == [] and dev.event_status == 0
    assert ask(dev, "*ESE?;*SRE?") == "4;16"


def test_rst_resets_settings_only(dev: Worker) -> None:
    dev.write(b"*ESE 1;LEV 3;BOGUS")
    assert dev.resets == 1
    dev.write(b"*RST")
    assert dev.resets == 2
    assert ask(dev, "LEV?;*ESE?") == "+0.000000000E+00;1"
    assert codes(dev) == [-113]


def test_tst_trg_opt(dev: Worker) -> None:
    assert ask(dev, "*TST?;*OPT?") == "0;0"
    dev.write(b"ARM;*TRG;*WAI")  # *TRG starts the armed operation; *WAI then waits for it
    assert dev.busy and dev.operations_pending


def test_srq_listener_fires_on_rising_edge_only(dev: Worker) -> None:
    seen: list[int] = []
    unsubscribe = dev.add_srq_listener(seen.append)
    dev.write(b"*SRE 16")  # MAV raises a service request
    assert seen == []
    dev.write(b"*IDN?")
    assert seen == [0x50]
    dev.poll()
    assert seen == [0x50]  # still requesting: no new edge
    dev.read()
    dev.write(b"*IDN?")
    assert seen == [0x50, 0x50]
    unsubscribe()
    unsubscribe()  # idempotent
    dev.read()
    dev.write(b"*IDN?")
    assert seen == [0x50, 0x50]


def test_serial_poll_clears_rqs_but_not_mss(dev: Worker) -> None:
    dev.write(b"*SRE 16;*IDN?")
    assert dev.serial_poll() == 0x50
    assert dev.serial_poll() == 0x10  # RQS reported once
    assert dev.status_byte == 0x50  # MSS is a summary, still set


def test_failing_listener_does_not_break_the_device(
    dev: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stb: int) -> None:
        raise RuntimeError("listener bug")

    seen: list[int] = []
    dev.add_srq_listener(broken)
    dev.add_srq_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="aiotmc.sim"):
        dev.write(b"*SRE 16;*IDN?")
    assert seen == [0x50]
    assert "listener bug" in caplog.text
    assert dev.read() == dev.identity.encode() + b"\n"


# -- query interrupted, latency, device clear --------------------------------------------------


def test_new_message_interrupts_an_unread_response(dev: Worker) -> None:
    dev.write(b"*IDN?")
    dev.write(b"*ESE?")
    assert dev.read() == b"0\n"
    assert dev.read() is None
    assert codes(dev) == [-410]
    assert dev.event_status & EventStatus.QYE


def test_two_messages_in_one_write_interrupt_too(dev: Worker) -> None:
    dev.write(b"*IDN?\n*ESE?\n")
    assert dev.read() == b"0\n"
    assert codes(dev) == [-410]


def test_latency_delays_readability(dev: Worker, clock: FakeClock) -> None:
    dev.latency = 0.5
    dev.write(b"*IDN?")
    assert dev.next_deadline() == pytest.approx(1000.5)
    assert dev.read() is None
    assert not dev.status_byte & StatusByte.MAV
    assert dev.busy
    clock.advance(0.499)
    assert dev.read() is None
    clock.advance(0.001)
    assert dev.status_byte & StatusByte.MAV
    assert dev.read() == dev.identity.encode() + b"\n"
    assert dev.next_deadline() is None
    assert not dev.busy


def test_latency_does_not_delay_commands(dev: Worker) -> None:
    dev.latency = 10.0
    dev.write(b"LEV 4")
    assert dev.level == 4.0
    assert not dev.busy
    assert dev.next_deadline() is None


def test_infinite_latency_never_answers_and_is_interrupted(dev: Worker, clock: FakeClock) -> None:
    dev.latency = float("inf")
    dev.write(b"*IDN?")
    clock.advance(1e6)
    assert dev.read() is None
    assert dev.next_deadline() is None  # no finite deadline to wait for
    assert dev.busy
    dev.latency = 0.0
    dev.write(b"*ESE?")  # the hung query is discarded
    assert dev.read() == b"0\n"
    assert codes(dev) == [-410]


def test_delay_next_responses(dev: Worker, clock: FakeClock) -> None:
    dev.delay_next_responses(2.0, count=1)
    dev.write(b"LEV 1")  # no response: does not use up the delay
    dev.write(b"*IDN?")
    assert dev.read() is None
    clock.advance(2.0)
    assert dev.read() is not None
    dev.write(b"*IDN?")
    assert dev.read() is not None


def test_device_clear_drops_pending_response_but_keeps_status(
    dev: Worker, clock: FakeClock
) -> None:
    dev.latency = 1.0
    dev.write(b"*ESE 1;BOGUS;*IDN?")
    dev.device_clear()
    clock.advance(5)
    assert dev.read() is None
    assert not dev.busy
    assert codes(dev) == [-113]
    dev.latency = 0
    assert ask(dev, "*ESE?") == "1"
    assert codes(dev) == [-113]  # no -410: the response was cleared, not interrupted


# -- operations: *OPC, *OPC?, *WAI ---------------------------------------------------------------


def test_opc_sets_esr_when_operation_completes(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 2;*OPC")
    assert dev.operations_pending
    assert dev.next_deadline() == pytest.approx(1002.0)
    assert dev.event_status == 0
    clock.advance(1.9)
    dev.poll()
    assert dev.event_status == 0
    clock.advance(0.1)
    dev.poll()
    assert dev.event_status == EventStatus.OPC
    assert dev.level == 1
    assert dev.next_deadline() is None


def test_opc_with_nothing_pending_is_immediate(dev: Worker) -> None:
    dev.write(b"*OPC")
    assert dev.event_status == EventStatus.OPC


def test_opc_srq_sequence(dev: Worker, clock: FakeClock) -> None:
    seen: list[int] = []
    dev.add_srq_listener(seen.append)
    dev.write(b"*ESE 1;*SRE 32")
    dev.write(b"STAR 1;*OPC")
    clock.advance(0.5)
    dev.poll()
    assert seen == []
    clock.advance(0.5)
    dev.poll()
    assert seen == [0x60]
    assert ask(dev, "*ESR?") == "1"
    assert not dev.status_byte & StatusByte.RQS


def test_opc_query_answers_when_complete(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 1;*OPC?;*IDN?")
    assert dev.read() is None
    assert dev.busy
    clock.advance(1.0)
    assert dev.read() == b"1;" + dev.identity.encode() + b"\n"


def test_wai_defers_the_rest_of_the_message(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 1;*WAI;LEV 7;LEV?")
    assert dev.level == 0.0
    clock.advance(1.0)
    dev.poll()
    assert dev.level == 7.0
    assert dev.read() == b"+7.000000000E+00\n"


def test_sequential_query_sees_the_completed_operation(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 0.25;RES?")
    assert dev.read() is None
    clock.advance(0.25)
    assert dev.read() == b"+1.000000000E+00\n"


def test_message_written_while_blocked_is_queued_not_interrupting(
    dev: Worker, clock: FakeClock
) -> None:
    dev.write(b"STAR 1;*OPC?")
    dev.write(b"*ESE?")  # waits behind *OPC? in the input queue
    assert dev.read() is None
    clock.advance(1)
    dev.poll()
    # the queued message starts while "1" is unread: that one is interrupted
    assert dev.read() == b"0\n"
    assert codes(dev) == [-410]


def test_bus_trigger_starts_armed_operation(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"ARM;*OPC")
    clock.advance(10)
    dev.poll()
    assert dev.event_status == 0
    assert dev.next_deadline() is None  # waiting for a trigger, not for time
    dev.trigger()
    assert dev.next_deadline() == pytest.approx(clock.now + 0.5)
    clock.advance(0.5)
    dev.poll()
    assert dev.event_status == EventStatus.OPC


def test_device_clear_stops_waiting_but_operation_runs_on(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 1;*OPC;*OPC?")
    dev.device_clear()
    assert not dev.busy
    clock.advance(1)
    dev.poll()
    assert dev.level == 1
    assert dev.event_status == 0  # *OPC was cancelled by the clear
    assert dev.read() is None


def test_rst_cancels_operations(dev: Worker, clock: FakeClock) -> None:
    dev.write(b"STAR 1;*OPC")
    dev.write(b"*RST")
    assert not dev.operations_pending
    clock.advance(2)
    dev.poll()
    assert dev.level == 0 and dev.event_status == 0


def test_deadline_listener_hears_new_deadlines(dev: Worker, clock: FakeClock) -> None:
    calls: list[float | None] = []
    remove = dev.add_deadline_listener(lambda: calls.append(dev.next_deadline()))
    dev.write(b"LEV 1")
    assert calls == []
    dev.write(b"STAR 3")
    assert calls == [pytest.approx(1003.0)]
    dev.latency = 1
    dev.write(b"*IDN?")
    assert calls[-1] == pytest.approx(1001.0)
    remove()
    dev.write(b"ARM;*TRG")
    assert len(calls) == 2


def test_handler_exception_propagates_and_device_stays_usable(dev: Worker) -> None:
    def broken(call: Call) -> Response:
        raise ZeroDivisionError("bug")

    dev.add_command("BROKen?", broken)
    with pytest.raises(ZeroDivisionError):
        dev.write(b"*ESE 2;BROK?;*ESE 3")
    assert not dev.busy
    assert ask(dev, "*ESE?") == "2"  # the rest of the failing message was dropped


def test_work_completed_within_a_call_is_not_reported_as_a_deadline(dev: Worker) -> None:
    calls: list[float | None] = []
    dev.add_deadline_listener(lambda: calls.append(dev.next_deadline()))
    dev.write(b"STAR 0;*OPC?")  # a zero-length operation completes inside write()
    assert dev.read() == b"1\n"
    assert calls == []
    dev.write(b"STAR 2")
    dev.write(b"STAR 5")  # later than the one already reported: no news
    assert calls == [pytest.approx(1002.0)]
