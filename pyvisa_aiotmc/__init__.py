"""PyVISA backend on aiotmc: ``pyvisa.ResourceManager("@aiotmc")``.

PyVISA finds a backend named ``@NAME`` as the module ``pyvisa_NAME`` and uses its
``WRAPPER_CLASS``. Every resource aiotmc opens (``TCPIP::...::SOCKET``, VXI-11, HiSLIP,
USBTMC, serial, Prologix, ``SIM::``) is then available through PyVISA's high-level API,
service requests included (``enable_event``/``wait_on_event``). See docs/pyvisa.md.
"""

from __future__ import annotations

from ._library import AiotmcVisaLibrary

__all__ = ["WRAPPER_CLASS", "AiotmcVisaLibrary"]

WRAPPER_CLASS = AiotmcVisaLibrary
