"""A Sparkplug B edge simulator: many edge nodes with devices publishing through a broker.

:class:`SparkplugEdgeSimulator` runs ``n_nodes`` edge nodes, one MQTT client each, with
``devices_per_node`` devices of ``metrics_per_device`` metrics (a mix of Double, Int32,
Boolean and String). Each node

* connects with its NDEATH (``bdSeq``) as the MQTT Will, publishes NBIRTH (``seq`` 0,
  ``bdSeq``, ``Node Control/Rebirth``) and one DBIRTH per device (names, aliases 1…n,
  datatypes, current values);
* then, ``rate_hz`` times a second, one DDATA per device with all its metrics by alias only
  and without datatypes (as the specification recommends for data messages), timestamped
  with the tick's time (ms); ``seq`` counts up 0–255 and wraps, shared by the node's births
  and data as Sparkplug says;
* answers a ``Node Control/Rebirth`` NCMD with a fresh NBIRTH (``seq`` reset) and DBIRTHs;
* on a clean stop publishes its NDEATH itself.

Nodes start their ticks spread over the period (like unsynchronised edges), so 3000
devices at 1 Hz arrive as a steady stream rather than a burst per second.

Encoding is cheap: every device's DDATA is a prebuilt protobuf template (all devices share
one layout) whose timestamps and values are patched in place with NumPy each tick — one
array per node, values generated vectorised, fixed-width (padded) varints so that nothing
moves. Only ``seq`` is appended per message.

Fault knobs for tests: :meth:`~SparkplugEdgeSimulator.skip_seq` (a gap: the host asks for a
rebirth), :meth:`~SparkplugEdgeSimulator.die` (the connection drops without DISCONNECT, so
the broker publishes the Will NDEATH), :meth:`~SparkplugEdgeSimulator.send_garbage` (a DDATA
that is not protobuf).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import aiomqtt
import numpy as np
import numpy.typing as npt

from shopfloor.connectors._sparkplug_payload import (
    DataType,
    Metric,
    Payload,
    PayloadError,
    decode_payload,
    encode_payload,
)

__all__ = ["SparkplugEdgeSimulator", "device_type_of", "metric_name", "sparkplug_simulator"]

log = logging.getLogger(__name__)

NAMESPACE: Final = "spBv1.0"
REBIRTH: Final = "Node Control/Rebirth"
GARBAGE: Final = b"\x07not a Sparkplug payload"
"""What :meth:`SparkplugEdgeSimulator.send_garbage` publishes: field 0, wire type 7."""

_TYPE_CYCLE: Final = (
    DataType.Double,
    DataType.Int32,
    DataType.Boolean,
    DataType.String,
    DataType.Double,
    DataType.Double,
    DataType.Int32,
    DataType.Double,
    DataType.Double,
    DataType.Boolean,
)
_PREFIX: Final = {
    DataType.Double: "value",
    DataType.Int32: "count",
    DataType.Boolean: "flag",
    DataType.String: "state",
}
_STATES: Final = ("RUNNING", "STOPPED", "STARVED", "BLOCKED", "FAULTED", "SETUPPP")
_STATE_BYTES: Final = np.frombuffer("".join(_STATES).encode(), np.uint8).reshape(len(_STATES), 7)
_TS_WIDTH: Final = 7  # padded varint: 49 bits of milliseconds
_INT_WIDTH: Final = 5  # padded varint: a full uint32 (two's complement Int32)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SEQ_FIELD: Final = tuple(b"\x18" + _varint(s) for s in range(256))
"""Payload field 3 (``seq``) for every value, appended to the templates."""


def _padded(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """Non-negative integers as fixed-width (padded) varints, shape ``(*values.shape, width)``."""
    shifts = np.arange(width, dtype=np.int64) * 7
    out = (values[..., None] >> shifts) & 0x7F
    out[..., :-1] |= 0x80
    return out.astype(np.uint8)


def device_type_of(metric: int) -> DataType:
    """The datatype of the ``metric``-th metric (0-based) of every simulated device."""
    return _TYPE_CYCLE[metric % len(_TYPE_CYCLE)]


def metric_name(metric: int) -> str:
    """The name of the ``metric``-th metric of every simulated device (``value_000`` …)."""
    return f"{_PREFIX[device_type_of(metric)]}_{metric:03d}"


@dataclass(frozen=True, slots=True)
class _Layout:
    """The DDATA template every device shares, and where its variable bytes are."""

    template: npt.NDArray[np.uint8]
    ts_idx: npt.NDArray[np.intp]
    double_idx: npt.NDArray[np.intp]
    int_idx: npt.NDArray[np.intp]
    bool_idx: npt.NDArray[np.intp]
    str_idx: npt.NDArray[np.intp]
    types: tuple[DataType, ...]

    @classmethod
    def build(cls, n_metrics: int) -> _Layout:
        types = tuple(device_type_of(j) for j in range(n_metrics))
        out = bytearray(b"\x08" + b"\x80" * (_TS_WIDTH - 1) + b"\x00")  # payload timestamp
        ts: list[int] = [1]
        where: dict[DataType, list[int]] = {t: [] for t in _PREFIX}
        width = {DataType.Double: 8, DataType.Int32: _INT_WIDTH, DataType.Boolean: 1}
        width[DataType.String] = 7
        for j, t in enumerate(types):
            body = bytearray(b"\x10" + _varint(j + 1) + b"\x18")
            ts_at = len(body)
            body += b"\x80" * (_TS_WIDTH - 1) + b"\x00"  # no datatype: the birth has it
            tag = {
                DataType.Double: b"\x69",  # double_value, fixed64
                DataType.Int32: b"\x50",  # int_value, varint
                DataType.Boolean: b"\x70",  # boolean_value, varint
                DataType.String: b"\x7a\x07",  # string_value, 7 bytes
            }[t]
            body += tag
            value_at = len(body)
            if t == DataType.Int32:  # a padded zero: the template decodes as it is
                body += b"\x80" * (_INT_WIDTH - 1) + b"\x00"
            else:
                body += b"\x00" * width[t]
            head = b"\x12" + _varint(len(body))
            base = len(out) + len(head)
            ts.append(base + ts_at)
            where[t].append(base + value_at)
            out += head + body

        def idx(starts: list[int], w: int) -> npt.NDArray[np.intp]:
            return (np.asarray(starts, np.intp)[:, None] + np.arange(w)).ravel()

        return cls(
            template=np.frombuffer(bytes(out), np.uint8).copy(),
            ts_idx=idx(ts, _TS_WIDTH),
            double_idx=idx(where[DataType.Double], 8),
            int_idx=idx(where[DataType.Int32], _INT_WIDTH),
            bool_idx=idx(where[DataType.Boolean], 1),
            str_idx=idx(where[DataType.String], 7),
            types=types,
        )


@dataclass(slots=True)
class _Node:
    index: int
    edge: str
    devices: tuple[str, ...]
    buf: npt.NDArray[np.uint8]
    doubles: npt.NDArray[np.float64]
    ints: npt.NDArray[np.int64]
    bools: npt.NDArray[np.uint8]
    states: npt.NDArray[np.intp]
    rng: np.random.Generator
    bd_seq: int = 0
    seq: int = 0
    client: aiomqtt.Client | None = None
    dead: bool = False
    skip: int = 0
    born: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1 + self.skip) % 256
        self.skip = 0
        return self.seq


class SparkplugEdgeSimulator:
    """Simulated Sparkplug B edge nodes and devices (see the module documentation).

    Use as an async context manager: entering connects every node and waits for its
    births; leaving publishes the NDEATHs and disconnects. Edge node ids are ``node000``…,
    device ids ``dev00000``… (unique over the simulator), metric names
    :func:`metric_name`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        group_id: str = "shopfloor-sim",
        n_nodes: int = 1,
        devices_per_node: int = 10,
        metrics_per_device: int = 10,
        rate_hz: float = 1.0,
        seed: int = 0,
    ) -> None:
        if n_nodes < 1 or devices_per_node < 1 or metrics_per_device < 1:
            raise ValueError("n_nodes, devices_per_node and metrics_per_device must be ≥ 1")
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.host, self.port, self.group_id = host, port, group_id
        self.n_nodes, self.devices_per_node = n_nodes, devices_per_node
        self.metrics_per_device, self.rate_hz, self.seed = metrics_per_device, rate_hz, seed
        self.messages_published = 0
        self.values_published = 0
        self.births_published = 0
        self.rebirths_answered = 0
        self.late_ticks = 0
        """Ticks that started more than a period late (the simulator could not keep up)."""
        self._layout = _Layout.build(metrics_per_device)
        self._run_id = uuid.uuid4().hex[:8]
        self._nodes: list[_Node] = []
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ public API

    @property
    def edges(self) -> list[str]:
        """The edge node ids."""
        return [n.edge for n in self._nodes]

    def devices(self, node: int) -> tuple[str, ...]:
        """The device ids of the ``node``-th edge node."""
        return self._nodes[node].devices

    @property
    def values_per_s(self) -> float:
        """The nominal data rate: devices × metrics × rate."""
        per = self.devices_per_node * self.metrics_per_device
        return self.n_nodes * per * self.rate_hz

    def skip_seq(self, node: int) -> None:
        """Make the next sequenced message of ``node`` skip one ``seq`` number (a gap)."""
        self._nodes[node].skip = 1

    def die(self, node: int) -> None:
        """Drop the node's connection without DISCONNECT: the broker publishes its Will.

        The node stays dead (no reconnect). Raises ``RuntimeError`` when it is not connected.
        """
        n = self._nodes[node]
        client = n.client
        # aiomqtt has no public way to lose a connection: shut down paho's socket under it
        sock = None if client is None else client._client.socket()
        if not isinstance(sock, socket.socket):
            raise RuntimeError(f"edge node {n.edge} is not connected")
        n.dead = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    async def send_garbage(self, node: int) -> None:
        """Publish a DDATA of the node's first device whose payload is not protobuf."""
        n = self._nodes[node]
        if n.client is None:
            raise RuntimeError(f"edge node {n.edge} is not connected")
        await n.client.publish(self._topic("DDATA", n.edge, n.devices[0]), GARBAGE, qos=0)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        rng = np.random.default_rng(self.seed)
        lay = self._layout
        counts = {t: lay.types.count(t) for t in _PREFIX}
        d = self.devices_per_node
        for i in range(self.n_nodes):
            node_rng = np.random.default_rng(rng.integers(1 << 62))
            first = i * d
            self._nodes.append(
                _Node(
                    index=i,
                    edge=f"node{i:03d}",
                    devices=tuple(f"dev{first + k:05d}" for k in range(d)),
                    buf=np.tile(lay.template, (d, 1)),
                    doubles=node_rng.uniform(0.0, 100.0, (d, counts[DataType.Double])),
                    ints=node_rng.integers(0, 1000, (d, counts[DataType.Int32])),
                    bools=node_rng.integers(0, 2, (d, counts[DataType.Boolean]), dtype=np.uint8),
                    states=node_rng.integers(0, len(_STATES), (d, counts[DataType.String])),
                    rng=node_rng,
                )
            )
        start = time.monotonic()
        for n in self._nodes:
            phase = n.index / (self.n_nodes * self.rate_hz)
            self._tasks.append(
                asyncio.create_task(self._run_node(n, start + phase), name=f"spb-sim:{n.edge}")
            )
        try:
            async with asyncio.timeout(30.0):
                for n in self._nodes:
                    await n.born.wait()
                    if n.dead:
                        raise ConnectionError(
                            f"edge node {n.edge}: cannot connect to {self.host}:{self.port}"
                        )
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=5.0)
        if pending:
            # a client whose connection was dropped may wait for a disconnect that never
            # comes: a second cancellation ends that wait
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("Sparkplug sim: %s failed: %s", task.get_name(), task.exception())

    # ------------------------------------------------------------------ one node

    def _topic(self, kind: str, edge: str, device: str = "") -> str:
        base = f"{NAMESPACE}/{self.group_id}/{kind}/{edge}"
        return f"{base}/{device}" if device else base

    def _ndeath(self, n: _Node) -> bytes:
        bd = Metric(name="bdSeq", datatype=DataType.Int64, value=n.bd_seq)
        return encode_payload(Payload(metrics=(bd,), timestamp=_now_ms()))

    async def _run_node(self, n: _Node, first_tick: float) -> None:
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"spb-sim-{self._run_id}-{self.group_id}-{n.edge}"[:64],
            will=aiomqtt.Will(self._topic("NDEATH", n.edge), self._ndeath(n), qos=1),
            clean_session=True,
            keepalive=30,
        )
        try:
            async with client:
                n.client = client
                await client.subscribe(self._topic("NCMD", n.edge), qos=1)
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._commands(n, client))
                        await self._births(n, client)
                        n.born.set()
                        tg.create_task(self._ticks(n, client, first_tick))
                finally:
                    task = asyncio.current_task()
                    if not n.dead and task is not None and task.cancelling():
                        # a clean stop: say so, as an edge node should
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(2.0):
                                death = self._ndeath(n)
                                await client.publish(self._topic("NDEATH", n.edge), death)
        except asyncio.CancelledError:
            raise
        except (aiomqtt.MqttError, OSError, ExceptionGroup) as exc:
            if not n.dead:
                log.warning("Sparkplug sim: edge node %s stopped: %s", n.edge, exc)
        finally:
            n.client = None
            n.dead = True
            n.born.set()

    async def _commands(self, n: _Node, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes | bytearray):
                continue
            try:
                cmd = decode_payload(bytes(message.payload))
            except PayloadError:
                continue
            if any(m.name == REBIRTH and m.value is True for m in cmd.metrics):
                self.rebirths_answered += 1
                await self._births(n, client)

    async def _births(self, n: _Node, client: aiomqtt.Client) -> None:
        async with n.lock:
            now = _now_ms()
            n.seq = 0
            nbirth = Payload(
                metrics=(
                    Metric(name="bdSeq", datatype=DataType.Int64, value=n.bd_seq, timestamp=now),
                    Metric(name=REBIRTH, datatype=DataType.Boolean, value=False, timestamp=now),
                ),
                timestamp=now,
                seq=0,
            )
            await client.publish(self._topic("NBIRTH", n.edge), encode_payload(nbirth), qos=0)
            names = [metric_name(j) for j in range(self.metrics_per_device)]
            types = self._layout.types
            for k, device in enumerate(n.devices):
                values = self._current(n, k)
                metrics = tuple(
                    Metric(name=name, alias=j + 1, datatype=t, value=v, timestamp=now)
                    for j, (name, t, v) in enumerate(zip(names, types, values, strict=True))
                )
                payload = Payload(metrics=metrics, timestamp=now, seq=n.next_seq())
                await client.publish(
                    self._topic("DBIRTH", n.edge, device), encode_payload(payload), qos=0
                )
            self.births_published += 1 + len(n.devices)

    def _current(self, n: _Node, k: int) -> list[float | int | bool | str]:
        """The current values of device ``k`` in metric order."""
        cursors = dict.fromkeys(_PREFIX, 0)
        out: list[float | int | bool | str] = []
        for t in self._layout.types:
            c = cursors[t]
            cursors[t] = c + 1
            if t == DataType.Double:
                out.append(float(n.doubles[k, c]))
            elif t == DataType.Int32:
                out.append(int(n.ints[k, c]))
            elif t == DataType.Boolean:
                out.append(bool(n.bools[k, c]))
            else:
                out.append(_STATES[int(n.states[k, c])])
        return out

    def _step(self, n: _Node, ts_ms: int) -> None:
        """Advance the node's values one tick and patch them into its templates."""
        lay, rng, buf = self._layout, n.rng, n.buf
        d = len(n.devices)
        ts = _padded(np.asarray([ts_ms], np.int64), _TS_WIDTH)[0]
        buf[:, lay.ts_idx] = np.tile(ts, len(lay.ts_idx) // _TS_WIDTH)
        if n.doubles.size:
            n.doubles += rng.normal(0.0, 0.5, n.doubles.shape)
            buf[:, lay.double_idx] = n.doubles.astype("<f8").view(np.uint8).reshape(d, -1)
        if n.ints.size:
            n.ints += rng.integers(0, 3, n.ints.shape)
            n.ints &= 0x7FFFFFFF
            buf[:, lay.int_idx] = _padded(n.ints, _INT_WIDTH).reshape(d, -1)
        if n.bools.size:
            n.bools ^= (rng.random(n.bools.shape) < 0.02).astype(np.uint8)
            buf[:, lay.bool_idx] = n.bools
        if n.states.size:
            change = rng.random(n.states.shape) < 0.01
            n.states[change] = rng.integers(0, len(_STATES), int(change.sum()))
            buf[:, lay.str_idx] = _STATE_BYTES[n.states].reshape(d, -1)

    async def _ticks(self, n: _Node, client: aiomqtt.Client, first_tick: float) -> None:
        period = 1.0 / self.rate_hz
        due = max(first_tick, time.monotonic())
        topics = [self._topic("DDATA", n.edge, dev) for dev in n.devices]
        per_message = self.metrics_per_device
        while not n.dead:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > period:
                self.late_ticks += 1
                due = time.monotonic()
            async with n.lock:
                if n.dead:
                    return
                self._step(n, _now_ms())
                rows = n.buf
                for k, topic in enumerate(topics):
                    payload = rows[k].tobytes() + _SEQ_FIELD[n.next_seq()]
                    await client.publish(topic, payload, qos=0)
                self.messages_published += len(topics)
                self.values_published += len(topics) * per_message
            due += period


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def sparkplug_simulator(
    spec: str,
    broker: str = "mqtt://127.0.0.1:1883",
    group_id: str = "shopfloor-sim",
    seed: int = 42,
) -> SparkplugEdgeSimulator:
    """A simulator from ``N_DEVICES:N_METRICS@RATE`` (e.g. ``3000:50@1``).

    Devices go 100 to an edge node (``ceil(N / nodes)`` each, so the count is rounded up to
    fill the nodes evenly). Raises ``ValueError`` for a bad spec or broker URL.
    """
    from urllib.parse import urlsplit

    head, sep, rate_text = spec.partition("@")
    devices_text, sep2, metrics_text = head.partition(":")
    try:
        if not sep2:
            raise ValueError
        devices, metrics = int(devices_text), int(metrics_text)
        rate = float(rate_text) if sep else 1.0
        if devices < 1 or metrics < 1 or rate <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--sparkplug {spec!r}: expected N_DEVICES:N_METRICS@RATE, e.g. 3000:50@1"
        ) from None
    parts = urlsplit(broker)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"--sparkplug-broker {broker!r}: expected mqtt://host[:port]")
    nodes = -(-devices // 100)
    per_node = -(-devices // nodes)
    return SparkplugEdgeSimulator(
        parts.hostname, parts.port or 1883, group_id, nodes, per_node, metrics, rate, seed
    )
