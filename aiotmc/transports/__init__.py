"""Transports: the links an Instrument talks through (TCP socket, USBTMC, simulator)."""
