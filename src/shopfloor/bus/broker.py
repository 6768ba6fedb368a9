"""An MQTT broker inside the process, for the embedded default (no servers to install).

Parts that speak MQTT (VDA 5050 vehicles, Sparkplug edges, the Unified Namespace) need a
broker. Real deployments point at Mosquitto, EMQX or HiveMQ; when none is reachable,
``shopfloor demo`` starts :class:`EmbeddedBroker` (amqtt, a pure-Python MQTT 3.1.1 broker)
on a loopback port and points both sides at it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from shopfloor.errors import ShopfloorError

__all__ = ["EmbeddedBroker", "broker_reachable", "mqtt_host_port"]

log = logging.getLogger(__name__)


def mqtt_host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://host:port`` (or ``tcp://``) endpoint; port 1883 by default."""
    parts = urlsplit(endpoint if "://" in endpoint else f"mqtt://{endpoint}")
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise ShopfloorError(f"{endpoint!r} is not an MQTT endpoint (mqtt://host:port)")
    default = 8883 if parts.scheme in ("mqtts", "ssl") else 1883
    return parts.hostname or "127.0.0.1", parts.port or default


async def broker_reachable(endpoint: str, within: float = 2.0) -> bool:
    """True when an MQTT broker accepts an anonymous session at the endpoint."""
    import aiomqtt

    host, port = mqtt_host_port(endpoint)
    try:
        async with asyncio.timeout(within), aiomqtt.Client(host, port, timeout=within):
            return True
    except (aiomqtt.MqttError, OSError, TimeoutError):
        return False


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """An anonymous MQTT broker on ``host`` (loopback by default) for the embedded default.

    ``async with EmbeddedBroker() as broker:`` then connect to ``broker.endpoint``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._broker: object | None = None

    @property
    def endpoint(self) -> str:
        """The ``mqtt://host:port`` URL clients connect to."""
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        from amqtt.broker import Broker  # imported late: only the embedded default needs it

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            raise ShopfloorError(f"could not start the embedded MQTT broker: {exc}") from exc
        self._broker = broker
        log.info("embedded MQTT broker listening on %s", self.endpoint)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()  # type: ignore[attr-defined]
