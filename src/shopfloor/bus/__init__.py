"""Moving data between processes: MQTT brokers (embedded or external).

The bus engines (in-process, MQTT, NATS JetStream) come here; for now the package holds the
embedded MQTT broker that the embedded default starts when no broker is configured.
"""

from __future__ import annotations

from shopfloor.bus.broker import EmbeddedBroker, broker_reachable, mqtt_host_port

__all__ = ["EmbeddedBroker", "broker_reachable", "mqtt_host_port"]
