"""What aiotmc.protocol modules export (trio's test_exports, in small).

``aiotmc.protocol.usbtmc`` is a package of private modules; its ``__init__`` re-exports
the public names, which the transports, the device-side simulator and users import.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import aiotmc.protocol
from aiotmc.protocol import usbtmc

#: The public names of aiotmc.protocol.usbtmc when it was one module; they must stay.
USBTMC_NAMES = {
    "DEFAULT_MAX_TRANSFER_SIZE",
    "HEADER_SIZE",
    "NEED_DATA",
    "BulkHeader",
    "CheckAbortReply",
    "CheckClearReply",
    "EndOfMessage",
    "InitiateAbortReply",
    "MsgID",
    "NeedRequest",
    "ResponseData",
    "UsbtmcCapabilities",
    "UsbtmcConnection",
    "UsbtmcRequest",
    "UsbtmcState",
    "UsbtmcStatus",
    "check_abort_bulk_in_status_request",
    "check_abort_bulk_out_status_request",
    "check_clear_status_request",
    "clear_feature_endpoint_halt_request",
    "get_capabilities_request",
    "indicator_pulse_request",
    "initiate_abort_bulk_in_request",
    "initiate_abort_bulk_out_request",
    "initiate_clear_request",
    "pack_header",
    "parse_capabilities",
    "parse_check_abort_bulk_in",
    "parse_check_abort_bulk_out",
    "parse_check_clear_status",
    "parse_initiate_abort",
    "parse_status",
    "unpack_header",
}

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(aiotmc.protocol.__path__, "aiotmc.protocol.")
)


def test_usbtmc_package_keeps_every_public_name() -> None:
    assert set(usbtmc.__all__) >= USBTMC_NAMES
    assert usbtmc.UsbtmcConnection.__module__ == "aiotmc.protocol.usbtmc._connection"


@pytest.mark.parametrize("name", ["aiotmc.protocol", *MODULES])
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(getattr(module, "__all__", []))
    assert len(exported) == len(set(exported)), name
    missing = [attr for attr in exported if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
