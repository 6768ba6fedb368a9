"""The error of the AAS package."""

from __future__ import annotations

from shopfloor.errors import ConfigError

__all__ = ["AasError"]


class AasError(ConfigError):
    """An AAS file cannot be read, written or turned into a factory model; the message
    names the file and, where there is one, the shell or element."""
