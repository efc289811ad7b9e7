"""Test beds: emulated USB buses that put aiotmc's own test tiers on real USB stacks.

A *test bed* plugs an emulated instrument (a :class:`~aiotmc.sim.usb_function.UsbFunction`,
usually :class:`~aiotmc.sim.usbtmc_device.UsbtmcFunction`) into a real USB stack:

* :mod:`testbeds.umockdev`: the usbdevfs ioctls under umockdev, below the real libusb of
  a client process (the umockdev tier, ``tests/usb``, ``tests/hardening``, ``benchmarks``);
* :mod:`testbeds.usbredir`: the spice usbredir protocol, plugged into QEMU's ``usb-redir``
  device in front of a real Linux kernel (the kernel tier, ``tests/kernel``).

This folder lives beside the ``aiotmc`` package, not in it: ``pip install aiotmc`` does not
install it (``tests/test_packaging.py`` checks the wheel). It runs from a checkout, with the
checkout on ``PYTHONPATH``; the umockdev device process runs under the system Python
(``PYTHONPATH=<checkout> /usr/bin/python3 -m testbeds.umockdev``). What users need to
simulate instruments (``aiotmc.sim``: the models, ``UsbtmcFunction``, ``FakeUsbPort``)
stays in the package. Stdlib plus ``aiotmc`` only.
"""
