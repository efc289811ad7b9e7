"""Simulated instruments (public): IEEE 488.2 device models and the ways to attach them."""
