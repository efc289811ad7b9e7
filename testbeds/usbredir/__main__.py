"""``python -m testbeds.usbredir --connect /path/to/usbredir.sock [--model dmm]``.

Plugs one simulated USBTMC instrument into a QEMU started with
``-chardev socket,id=ur,path=/path/to/usbredir.sock,server=on,wait=off
-device qemu-xhci -device usb-redir,chardev=ur`` and serves it until interrupted
(``--connect 127.0.0.1:PORT`` for a TCP chardev).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from aiotmc.sim.devices import create_device
from aiotmc.sim.usbtmc_device import UsbtmcFunction

from .runner import Address, UsbredirRunner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbeds.usbredir")
    parser.add_argument("--connect", required=True, help="unix socket path or HOST:PORT")
    parser.add_argument("--model", default="dmm", help="dmm, psu, scope or wavegen")
    parser.add_argument("--serial", default="MY123")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    address: Address = args.connect
    host, _, port = args.connect.rpartition(":")
    if host and port.isdigit():
        address = (host, int(port))
    runner = UsbredirRunner()
    try:
        function = UsbtmcFunction(create_device(args.model), serial=args.serial)
        runner.plug(function, address)
        sys.stderr.write(f"plugged {args.model} into {args.connect}; Ctrl-C unplugs\n")
        while runner.device() is not None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
