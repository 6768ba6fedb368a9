"""Moving data between processes: the bus, MQTT brokers (embedded or external), the UNS.

* The bus between edges and workers: one interface (:class:`Publisher`, :class:`Consumer`,
  :class:`Delivery`; :mod:`shopfloor.bus.base`), the in-process :class:`MemoryBus` and NATS
  JetStream (:mod:`shopfloor.bus.nats`); the worker that stores what it carries is
  :class:`shopfloor.bus.worker.IngestWorker`, the edge :class:`shopfloor.edge.node.EdgeNode`.
* The embedded MQTT broker the embedded default starts when no broker is configured, and
  :class:`UnsPublisher`, which republishes every stored value on MQTT at its signal path.
"""

from __future__ import annotations

from shopfloor.bus.base import Consumer, ConsumerState, Delivery, Publisher, bus_key
from shopfloor.bus.broker import EmbeddedBroker, broker_reachable, mqtt_host_port
from shopfloor.bus.memory import MemoryBus
from shopfloor.bus.uns import DEFAULT_PREFIX, UnsMode, UnsPublisher, UnsStats, uns_topic

__all__ = [
    "DEFAULT_PREFIX",
    "Consumer",
    "ConsumerState",
    "Delivery",
    "EmbeddedBroker",
    "MemoryBus",
    "Publisher",
    "UnsMode",
    "UnsPublisher",
    "UnsStats",
    "broker_reachable",
    "bus_key",
    "mqtt_host_port",
    "uns_topic",
]
