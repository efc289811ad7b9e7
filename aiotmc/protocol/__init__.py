"""Sans-IO protocol machines: bytes in, events out. Stdlib only (no anyio, socket, usb1)."""
