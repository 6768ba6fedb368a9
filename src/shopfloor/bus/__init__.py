"""Moving data between processes: MQTT brokers (embedded or external), the Unified Namespace.

The bus engines (in-process, MQTT, NATS JetStream) come here; for now the package holds the
embedded MQTT broker that the embedded default starts when no broker is configured, and
:class:`UnsPublisher`, which republishes every stored value on MQTT at its signal path.
"""

from __future__ import annotations

from shopfloor.bus.broker import EmbeddedBroker, broker_reachable, mqtt_host_port
from shopfloor.bus.uns import DEFAULT_PREFIX, UnsMode, UnsPublisher, UnsStats, uns_topic

__all__ = [
    "DEFAULT_PREFIX",
    "EmbeddedBroker",
    "UnsMode",
    "UnsPublisher",
    "UnsStats",
    "broker_reachable",
    "mqtt_host_port",
    "uns_topic",
]
