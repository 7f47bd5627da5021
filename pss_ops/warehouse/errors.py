"""The warehouse's one error type, importable without SQLAlchemy (the CLI reports it)."""

from __future__ import annotations


class WarehouseError(RuntimeError):
    """The warehouse can't be reached or refused a write; the message names its URL without the password."""


class WarehouseUrlError(WarehouseError, ValueError):
    """The warehouse URL itself is wrong (malformed, an unsupported database or driver): an input error."""
