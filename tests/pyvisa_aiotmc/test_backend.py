"""PyVISA's own high-level API on the ``@aiotmc`` backend, against every simulated kind."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pyvisa import constants, errors, rname
from pyvisa.constants import EventMechanism, EventType, StatusCode

import aiotmc
from aiotmc.sync._portal import portal_for

from .conftest import KINDS

pyvisa = pytest.importorskip("pyvisa")

#: Kinds whose bus delivers service requests (the others raise VI_ERROR_NSUP_OPER).
SRQ_KINDS = ["sim", "vxi11", "hislip", "usb"]
RQS = 0x40
ESB = 0x20


def _open(rm: Any, resources: dict[str, str], kind: str, **kwargs: Any) -> Any:
    return rm.open_resource(resources[kind], read_termination="\n", **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_query_values_status_trigger_and_clear(
    rm: Any, resources: dict[str, str], kind: str
) -> None:
    inst = _open(rm, resources, kind, timeout=5000)
    try:
        assert inst.timeout == 5000
        assert inst.query("*IDN?").startswith("aiotmc,SIM-SCOPE,")
        values = inst.query_binary_values(":WAVeform:TEST? 1000", datatype="B")
        assert values == [i % 256 for i in range(1000)]
        inst.write("*ESE 60")
        assert inst.query_ascii_values("*ESE?", converter="d") == [60]
        assert inst.read_stb() & RQS == 0
        inst.assert_trigger()
        inst.clear()
        inst.write("*IDN?")
        assert inst.read_raw().startswith(b"aiotmc,SIM-SCOPE,")
    finally:
        inst.close()


@pytest.mark.parametrize("kind", ["sim", "socket", "usb"])
def test_messages_longer_than_the_chunk_size_arrive_whole(
    rm: Any, resources: dict[str, str], kind: str
) -> None:
    with _open(rm, resources, kind) as inst:
        inst.chunk_size = 7  # every read below is many viRead calls
        values = inst.query_binary_values(":WAVeform:TEST? 300", datatype="B", chunk_size=5)
        assert values == [i % 256 for i in range(300)]
        assert inst.query("*IDN?").startswith("aiotmc,SIM-SCOPE,")
        inst.write("*ESE 12;:WAVeform:TEST? 20")
        assert inst.read_bytes(4) == b"#220"
        # the rest of the message is dropped by the next command, as by the instrument
        assert inst.query("*ESE?") == "12"


@pytest.mark.parametrize("kind", SRQ_KINDS)
def test_service_requests_are_visa_events(rm: Any, resources: dict[str, str], kind: str) -> None:
    with _open(rm, resources, kind, timeout=5000) as inst:
        inst.write("*CLS;*ESE 1;*SRE 32")
        inst.enable_event(EventType.service_request, EventMechanism.queue)
        inst.write(":SINGle;*OPC")
        inst.assert_trigger()
        response = inst.wait_on_event(EventType.service_request, 5000)
        assert response.event.event_type == EventType.service_request
        assert not response.timed_out
        assert inst.read_stb() & ESB  # (RQS may be cleared by the poll that saw the SRQ)
        late = inst.wait_on_event(EventType.service_request, 10, capture_timeout=True)
        assert late.timed_out
        with pytest.raises(errors.VisaIOError) as caught:
            inst.wait_on_event(EventType.service_request, 0)
        assert caught.value.error_code == StatusCode.error_timeout
        inst.discard_events(EventType.service_request, EventMechanism.queue)
        inst.disable_event(EventType.service_request, EventMechanism.queue)
        with pytest.raises(errors.VisaIOError) as caught:
            inst.wait_on_event(EventType.service_request, 0)
        assert caught.value.error_code == StatusCode.error_not_enabled


def test_service_request_handlers_are_called(rm: Any, resources: dict[str, str]) -> None:
    seen: list[tuple[Any, Any]] = []
    called = threading.Event()

    def handler(resource: Any, event: Any, user_handle: Any) -> None:
        seen.append((event.event_type, user_handle))
        called.set()

    with _open(rm, resources, "sim", timeout=5000) as inst:
        inst.write("*CLS;*ESE 1;*SRE 32")
        wrapped = inst.wrap_handler(handler)
        user_handle = inst.install_handler(EventType.service_request, wrapped, 42)
        inst.enable_event(EventType.service_request, EventMechanism.handler)
        inst.write(":SINGle;*OPC")
        inst.assert_trigger()
        assert called.wait(5), "the handler was not called"
        inst.disable_event(EventType.service_request, EventMechanism.handler)
        inst.uninstall_handler(EventType.service_request, wrapped, user_handle)
    assert seen == [(EventType.service_request, 42)]


@pytest.mark.parametrize("kind", ["socket", "serial", "prologix"])
def test_events_without_a_service_request_channel_are_refused(
    rm: Any, resources: dict[str, str], kind: str
) -> None:
    with _open(rm, resources, kind) as inst:
        with pytest.raises(errors.VisaIOError) as caught:
            inst.enable_event(EventType.service_request, EventMechanism.queue)
        assert caught.value.error_code == StatusCode.error_nonsupported_operation
        assert isinstance(caught.value.__cause__, aiotmc.UnsupportedOperation)
        with pytest.raises(errors.VisaIOError) as caught:
            inst.enable_event(EventType.trig, EventMechanism.queue)
        assert caught.value.error_code == StatusCode.error_invalid_event
        assert inst.query("*IDN?").startswith("aiotmc,")  # still usable


@pytest.mark.parametrize("kind", ["sim", "socket", "hislip"])
def test_a_timeout_is_vi_error_tmo_and_the_session_stays_usable(
    rm: Any, resources: dict[str, str], kind: str
) -> None:
    with _open(rm, resources, kind) as inst:
        inst.timeout = 50
        with pytest.raises(errors.VisaIOError) as caught:
            inst.read()  # nothing was asked
        assert caught.value.error_code == StatusCode.error_timeout
        assert isinstance(caught.value.__cause__, aiotmc.ReadTimeout)
        inst.timeout = 5000
        assert inst.query("*IDN?").startswith("aiotmc,")


def test_timeouts_are_milliseconds_with_visa_s_special_values(
    rm: Any, resources: dict[str, str]
) -> None:
    with _open(rm, resources, "sim") as inst:
        session = rm.visalib.sessions[inst.session]
        assert inst.timeout == 2000  # VISA's default
        assert session.instrument.timeout == 2.0
        inst.timeout = 5000
        assert (inst.timeout, session.instrument.timeout) == (5000, 5.0)
        inst.timeout = None
        assert inst.timeout == float("inf")
        assert session.instrument.timeout is None
        inst.timeout = 0  # VI_TMO_IMMEDIATE
        assert (inst.timeout, session.instrument.timeout) == (0, 0.0)
        inst.timeout = 2_000_000  # beyond aiotmc's 1000 s: unambiguous in VISA
        assert inst.timeout == 2_000_000
        assert inst.query("*IDN?").startswith("aiotmc,")


def test_attributes_pyvisa_touches(rm: Any, resources: dict[str, str]) -> None:
    with _open(rm, resources, "sim") as inst:
        assert inst.resource_name == "SIM::scope::pyvisa-backend"
        assert inst.interface_type == constants.InterfaceType.tcpip
        assert inst.resource_manufacturer_name == "aiotmc"
        assert inst.send_end is True
        inst.send_end = False
        assert inst.send_end is False
        inst.send_end = True
        assert inst.get_visa_attribute(constants.ResourceAttribute.termchar) == ord("\n")
        assert inst.get_visa_attribute(constants.ResourceAttribute.termchar_enabled)
        inst.read_termination = None  # ends on END on this bus
        assert inst.query("*IDN?").endswith("\n")
        with pytest.raises(errors.VisaIOError) as caught:
            inst.get_visa_attribute(constants.ResourceAttribute.gpib_primary_address)
        assert caught.value.error_code == StatusCode.error_nonsupported_attribute


def test_locks_between_clients(rm: Any, resources: dict[str, str]) -> None:
    with _open(rm, resources, "vxi11") as inst:
        inst.lock_excl(1000)
        assert inst.query("*IDN?").startswith("aiotmc,")
        inst.unlock()
        with inst.lock_context(1000):
            assert inst.query("*ESE 8;*ESE?") == "8"
    with _open(rm, resources, "socket") as inst, pytest.raises(errors.VisaIOError) as caught:
        inst.lock_excl(10)
    assert caught.value.error_code == StatusCode.error_nonsupported_operation


def test_open_errors_are_visa_status_codes(rm: Any, resources: dict[str, str]) -> None:
    cases = {
        "SIM::no-such-model": StatusCode.error_resource_not_found,
        "TCPIP0::127.0.0.1::99999::SOCKET": StatusCode.error_invalid_resource_name,
    }
    for name, code in cases.items():
        with pytest.raises(errors.VisaIOError) as caught:
            rm.open_resource(name)
        assert caught.value.error_code == code, name
        assert isinstance(caught.value.__cause__, aiotmc.AiotmcError)


def test_list_resources_is_aiotmc_s_list(rm: Any) -> None:
    found = portal_for().run(aiotmc.list_resources)
    assert rm.list_resources("?*") == rname.filter(found, "?*")


def test_sessions_on_the_trio_loop_thread(
    rm: Any, resources: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOTMC_SYNC_BACKEND", "trio")
    for kind in ("sim", "socket"):
        with _open(rm, resources, kind) as inst:
            assert inst.query("*IDN?").startswith("aiotmc,SIM-SCOPE,")
            assert inst.query_binary_values(":WAVeform:TEST? 10", "B") == list(range(10))


def test_the_backend_is_found_by_name() -> None:
    from pyvisa.highlevel import get_wrapper_class

    import pyvisa_aiotmc

    assert get_wrapper_class("aiotmc") is pyvisa_aiotmc.WRAPPER_CLASS


def test_open_resource_arguments(rm: Any, resources: dict[str, str]) -> None:
    with _open(rm, resources, "socket") as inst:
        assert inst.chunk_size == 1 << 20  # messages arrive whole: big pieces save calls
    with _open(rm, resources, "socket", chunk_size=7) as inst:
        assert inst.chunk_size == 7
        assert inst.query("*IDN?").startswith("aiotmc,")
    with pytest.raises(ValueError, match="not a valid attribute"):
        rm.open_resource(resources["socket"], no_such_attribute=1)


@pytest.mark.parametrize("kind", ["vxi11", "hislip", "usb", "prologix"])
def test_control_ren(rm: Any, resources: dict[str, str], kind: str) -> None:
    with _open(rm, resources, kind) as inst:
        inst.control_ren(constants.RENLineOperation.asrt_address_llo)
        inst.control_ren(constants.RENLineOperation.deassert_gtl)
        assert inst.query("*IDN?").startswith("aiotmc,")
    with _open(rm, resources, "sim") as inst, pytest.raises(errors.VisaIOError) as caught:
        inst.control_ren(constants.RENLineOperation.asrt)  # the simulator has no REN
    assert caught.value.error_code == StatusCode.error_nonsupported_operation


def test_open_with_an_exclusive_lock(rm: Any, resources: dict[str, str]) -> None:
    first = rm.open_resource(
        resources["hislip"], access_mode=constants.AccessModes.exclusive_lock, open_timeout=1000
    )
    try:
        with pytest.raises(errors.VisaIOError) as caught:
            rm.open_resource(
                resources["hislip"],
                access_mode=constants.AccessModes.exclusive_lock,
                open_timeout=0,
            )
        assert caught.value.error_code == StatusCode.error_resource_busy
    finally:
        first.close()
    with rm.open_resource(
        resources["hislip"], access_mode=constants.AccessModes.exclusive_lock, open_timeout=1000
    ):
        pass
