"""Wiring: the application, mempool, HTTP API, metrics, CLI and configuration."""

__version__ = "0.1.0"
