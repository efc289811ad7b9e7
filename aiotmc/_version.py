"""Version of the aiotmc package."""

__version__ = "0.1.0"
