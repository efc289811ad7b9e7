"""An instrument opened in one notebook cell is used and closed in later cells, through a
real Jupyter kernel (ipykernel, driven by jupyter_client): on the async API (IPython's
asyncio autoawait) and on aiotmc.sync (its own loop thread, the kernel's loop untouched)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ipykernel")
manager_module = pytest.importorskip("jupyter_client.manager")

TIMEOUT = 60


@pytest.fixture(scope="module")
def kernel() -> Iterator[Any]:
    manager, client = manager_module.start_new_kernel(
        kernel_name="python3", startup_timeout=TIMEOUT
    )
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: Any, code: str) -> str:
    """Execute ``code`` as one cell; its stdout, or the cell's error raised."""
    out: list[str] = []

    def output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "execute_result":
            out.append(msg["content"]["data"]["text/plain"] + "\n")

    reply = client.execute_interactive(code, timeout=TIMEOUT, output_hook=output)
    content = reply["content"]
    assert content["status"] == "ok", f"{content.get('ename')}: {content.get('evalue')}"
    return "".join(out)


def test_async_instrument_across_cells(kernel: Any) -> None:
    run_cell(kernel, "import aiotmc")
    run_cell(kernel, "cm = aiotmc.open('SIM::dmm::nb-async', srq_poll_interval=0.05)")
    run_cell(kernel, "inst = await cm.__aenter__()")
    assert run_cell(kernel, "print(await inst.query('*IDN?'))").startswith("aiotmc,SIM-DMM")
    run_cell(kernel, "await cm.__aexit__(None, None, None)")
    assert run_cell(kernel, "print(inst.closed)") == "True\n"


def test_sync_instrument_across_cells(kernel: Any) -> None:
    run_cell(kernel, "import aiotmc.sync")
    run_cell(kernel, "s = aiotmc.sync.open('SIM::scope::nb-sync')")
    assert run_cell(kernel, "print(s.query('*IDN?'))").startswith("aiotmc,SIM-SCOPE")
    assert run_cell(kernel, "print(s.query_many(['*OPC?', '*OPC?']))") == "['1', '1']\n"
    run_cell(kernel, "s.close()")
    assert run_cell(kernel, "print(s.closed)") == "True\n"


def test_async_tcp_with_srq_polling_across_cells(kernel: Any) -> None:
    """The case the issue reported: TCP with a background SRQ poller, closed in a later
    cell. The simulator serves from this process (aiotmc.sync's loop thread)."""
    from aiotmc.sim.devices import create_device
    from aiotmc.sim.server import SimServer
    from aiotmc.sync._portal import portal_for

    with portal_for("asyncio").hold(SimServer(create_device("dmm"))) as server:
        run_cell(kernel, "import aiotmc")
        run_cell(kernel, f"cm = aiotmc.open({server.resource!r}, srq_poll_interval=0.05)")
        run_cell(kernel, "tcp = await cm.__aenter__()")
        assert run_cell(kernel, "print(tcp.srq_poller is not None)") == "True\n"
        assert run_cell(kernel, "print(await tcp.query('*IDN?'))").startswith("aiotmc,SIM-DMM")
        run_cell(kernel, "await cm.__aexit__(None, None, None)")
        assert run_cell(kernel, "print(tcp.closed, tcp.srq_poller)") == "True None\n"
