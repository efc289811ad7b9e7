"""Private USB layer: the only package that imports usb1 (python-libusb1)."""
