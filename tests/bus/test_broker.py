"""The embedded MQTT broker: real clients publish and subscribe through it."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from shopfloor.bus import EmbeddedBroker, broker_reachable, mqtt_host_port
from shopfloor.errors import ShopfloorError


async def test_clients_exchange_retained_messages() -> None:
    async with EmbeddedBroker() as broker:
        assert await broker_reachable(broker.endpoint)
        host, port = mqtt_host_port(broker.endpoint)
        async with aiomqtt.Client(host, port) as pub:
            await pub.publish("uagv/v2/Acme/AGV-1/connection", b'{"x": 1}', qos=1, retain=True)
        async with aiomqtt.Client(host, port) as sub:
            await sub.subscribe("uagv/#", qos=1)
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    assert message.payload == b'{"x": 1}'
                    assert message.retain
                    break
    assert not await broker_reachable(broker.endpoint)


def test_endpoints_parse() -> None:
    assert mqtt_host_port("mqtt://10.0.0.1") == ("10.0.0.1", 1883)
    assert mqtt_host_port("mqtts://h:9000") == ("h", 9000)
    assert mqtt_host_port("127.0.0.1:1884") == ("127.0.0.1", 1884)
    with pytest.raises(ShopfloorError, match="not an MQTT endpoint"):
        mqtt_host_port("opc.tcp://h:4840")
