"""Wiring: the application, mempool, HTTP API, metrics, CLI and configuration."""

from node import native as _native

__version__ = "0.1.0"

# before any other module of Redwood loads: the compiled hot modules, when fresh
_native.enable()
