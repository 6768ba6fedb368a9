"""Connectors: one supervisor per device connection, yielding raw batches.

Use :func:`create_connector` to build a connector by protocol name; the protocol modules
are imported only when a connector of theirs is created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from shopfloor.connectors.base import (
    Backoff,
    BatchSink,
    Connector,
    ConnectorStatus,
    PointInfo,
    PointSpec,
    TableSink,
)
from shopfloor.errors import ConnectorError

__all__ = [
    "Backoff",
    "BatchSink",
    "Connector",
    "ConnectorStatus",
    "PointInfo",
    "PointSpec",
    "TableSink",
    "create_connector",
    "protocols",
]

# protocol name → "module:class", imported lazily so that an unused protocol's library
# need not be importable.
_REGISTRY: dict[str, str] = {
    "modbus": "shopfloor.connectors.modbus:ModbusConnector",
    "mqtt": "shopfloor.connectors.mqtt_json:MqttJsonConnector",
    "opcua": "shopfloor.connectors.opcua:OpcUaConnector",
    "sparkplug": "shopfloor.connectors.sparkplug:SparkplugConnector",
    "vda5050": "shopfloor.connectors.vda5050:VdaConnector",
}


def protocols() -> list[str]:
    """The protocol names :func:`create_connector` knows, sorted."""
    return sorted(_REGISTRY)


def create_connector(
    protocol: str,
    name: str,
    endpoint: str,
    points: Sequence[PointSpec],
    options: Mapping[str, Any] | None = None,
    *,
    dead_letter_sink: TableSink | None = None,
    event_sink: TableSink | None = None,
) -> Connector:
    """A connector for ``protocol`` (e.g. ``"opcua"``) reading ``points`` from ``endpoint``.

    ``dead_letter_sink`` and ``event_sink`` receive what the protocol could not parse and
    the events it reports. Raises :class:`~shopfloor.errors.ConnectorError` naming the
    protocol when it is unknown, and naming the connection when its options are invalid.
    """
    target = _REGISTRY.get(protocol)
    if target is None:
        raise ConnectorError(
            f"connection {name!r}: unknown protocol {protocol!r} (known: {', '.join(protocols())})"
        )
    module_name, _, class_name = target.partition(":")
    cls: Callable[..., Connector] = getattr(import_module(module_name), class_name)
    connector = cls(name, endpoint, points, options)
    connector.dead_letter_sink = dead_letter_sink
    connector.event_sink = event_sink
    return connector
