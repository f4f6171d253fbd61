"""quintd: a local daemon that detects AI coding agents and reports their session lifecycle."""

__version__ = "0.1.0"

__all__ = ["__version__"]
