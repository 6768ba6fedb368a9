"""The exceptions shopfloor raises, in one tree.

Every error a caller can handle derives from :class:`ShopfloorError`. Library errors
(DuckDB, asyncua, pydantic, …) are translated at the boundary with
``raise SomeError(...) from exc`` so callers never need to import a backend's exceptions.
"""

from __future__ import annotations

__all__ = [
    "AlarmError",
    "BatchError",
    "BufferClosedError",
    "BufferFullError",
    "BusError",
    "ConfigError",
    "ConnectionFailed",
    "ConnectorError",
    "EdgeBufferError",
    "HistorianError",
    "NotificationError",
    "ShopfloorError",
    "UnknownSignalError",
]


class ShopfloorError(Exception):
    """Base of every shopfloor error."""


class ConfigError(ShopfloorError):
    """A configuration or factory file is invalid (see ``shopfloor.model.FactoryFileError``)."""


class BatchError(ShopfloorError):
    """A batch of readings does not have the expected columns or types."""


class HistorianError(ShopfloorError):
    """The historian could not store or read data."""


class UnknownSignalError(HistorianError):
    """A query names a signal the historian has never seen."""


class ConnectorError(ShopfloorError):
    """A connector failed; the message names the connection."""


class ConnectionFailed(ConnectorError):  # noqa: N818 - reads as an event, like TimeoutError's peers
    """A connector could not (re)connect to its device or server."""


class AlarmError(ShopfloorError):
    """An alarm operation is not possible: unknown alarm, nothing to acknowledge, bad shelving."""


class NotificationError(ShopfloorError):
    """An alarm notification could not be delivered (after its retries)."""


class EdgeBufferError(ShopfloorError):
    """The edge store-and-forward buffer cannot be used: its file is locked by another
    process, corrupt, not a buffer, or unwritable (the message names the path)."""


class BufferFullError(EdgeBufferError):
    """The edge buffer is full and its overflow policy is ``reject`` (or a payload is larger
    than the whole buffer); the refusal is recorded as a dropped batch."""


class BufferClosedError(EdgeBufferError):
    """The edge buffer was closed while a caller waited on it (or is used after ``close``)."""


class BusError(ShopfloorError):
    """The message bus (NATS JetStream, the in-process bus) refused or could not take a
    publish, a fetch or an acknowledgement: the broker is unreachable, the stream is full,
    a message is too large. The message names the bus URL and what was attempted."""
