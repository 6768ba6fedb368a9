"""Wires the pieces for ``shopfloor up``: factory file → connectors → pipeline → historian.

:class:`Runtime` registers every signal of the factory in the historian, builds the mapper
from the file's bindings, starts one connector per connection whose protocol is available
and the pipeline's writer, all in one ``TaskGroup``; when the file has alarm rules, the
alarm engine (:mod:`shopfloor.analytics.alarms`) observes the pipeline, and so does the
anomaly engine (:mod:`shopfloor.analytics.anomaly`) when it has an ``anomaly`` section.
Leaving the context stops the connectors first and then flushes everything they delivered.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import pyarrow as pa

from shopfloor.connectors import Connector, PointSpec, TableSink, create_connector, protocols
from shopfloor.connectors.base import Clock, wall_clock_us
from shopfloor.edge.mapper import Mapper, Route
from shopfloor.edge.pipeline import Observer, Pipeline
from shopfloor.historian.base import Historian, SignalInfo
from shopfloor.model import Factory

if TYPE_CHECKING:  # imported when a file has alarm rules / anomaly detectors
    from shopfloor.analytics.alarms import AlarmEngine
    from shopfloor.analytics.anomaly import AnomalyEngine

__all__ = ["Runtime", "signal_infos"]

log = logging.getLogger(__name__)


def _slug(device: str) -> str:
    """A device id as an asset id of the data model (``AGV 7`` → ``agv-7``)."""
    return re.sub(r"[^a-z0-9_.-]+", "-", device.lower()).strip("-") or "device"


def signal_infos(factory: Factory) -> list[SignalInfo]:
    """The historian catalog entries of every signal in ``factory``."""
    return [
        SignalInfo(path=s.path, data_type=s.data_type, unit=s.unit, kind=s.kind)  # type: ignore[arg-type]
        for s in factory.signals()
    ]


class Runtime:
    """The embedded platform for one factory file (see the module docstring).

    ``endpoint_override`` (connection name → endpoint) points connections elsewhere than
    the file says, e.g. at a simulator on other ports. ``clock`` (µs since the epoch) is
    given to every connector to stamp the data its protocol does not stamp (the wall clock
    by default; the demo's simulated time).
    """

    def __init__(
        self,
        factory: Factory,
        historian: Historian,
        *,
        max_queue: int = 256,
        flush_interval: float = 0.25,
        endpoint_override: Mapping[str, str] | None = None,
        observers: Sequence[Observer] = (),
        event_observers: Sequence[TableSink] = (),
        alarms: bool = True,
        clock: Clock = wall_clock_us,
    ) -> None:
        self.factory = factory
        self.clock = clock
        """Stamps the connectors' data where the protocol gives no time."""
        self.alarms: AlarmEngine | None = None
        """The alarm engine, running when the file has alarm rules (and ``alarms`` is true)."""
        self._alarms_enabled = alarms
        self.anomaly: AnomalyEngine | None = None
        """The anomaly engine, running when the file has an ``anomaly`` section."""
        self.observers = list(observers)
        """Told every committed batch of readings (see :data:`~shopfloor.edge.Observer`)."""
        self.event_observers = list(event_observers)
        """Told every batch of events (:data:`~shopfloor.edge.events.EVENT_SCHEMA`) once stored."""
        self._endpoints = dict(endpoint_override or {})
        self.historian = historian
        self.connectors: list[Connector] = []
        self.skipped: dict[str, str] = {}
        """Connections not started, with the reason (e.g. protocol not available yet)."""
        self.signal_ids: dict[str, int] = {}
        self.events_stored = 0
        self._max_queue = max_queue
        self._flush_interval = flush_interval
        self.pipeline: Pipeline | None = None
        self._group: asyncio.TaskGroup | None = None
        self._connector_tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._devices: dict[str, dict[str, str]] = {}
        """Per connection: device id (first address segment) → asset path."""
        self._auto_area: dict[str, str] = {}
        self.discovered: dict[str, SignalInfo] = {}
        """Signals created at run time for devices the factory file does not name."""

    async def __aenter__(self) -> Self:
        self.signal_ids = await self.historian.register_signals(signal_infos(self.factory))
        routes: dict[tuple[str, str], Route] = {}
        points: dict[str, list[PointSpec]] = defaultdict(list)
        for (conn_name, addr), sig in self.factory.bindings().items():
            b = sig.binding
            assert b is not None
            routes[(conn_name, addr)] = Route(
                self.signal_ids[sig.path], sig.data_type, b.scale, b.offset
            )
            points[conn_name].append(PointSpec(addr, sig.data_type, dict(b.options)))
            devices = self._devices.setdefault(conn_name, {})
            devices.setdefault(addr.split("/", 1)[0], sig.asset_path)
        if self.factory.document.anomaly:
            from shopfloor.analytics.anomaly import AnomalyEngine

            self.anomaly = AnomalyEngine.from_factory(
                self.factory, self.historian, event_sink=self._tell_event_observers
            )
            self.observers.append(self.anomaly)
        self.pipeline = Pipeline(
            self.historian,
            Mapper(routes),
            max_queue=self._max_queue,
            flush_interval=self._flush_interval,
            resolver=self._resolve,
            observers=self.observers,
        )
        available = protocols()
        for name, conn in self.factory.connections.items():
            if conn.protocol not in available:
                self.skipped[name] = f"protocol {conn.protocol!r} is not available yet"
                continue
            options = dict(conn.options)
            auto_area = options.pop("auto_area", None)
            if auto_area is not None:
                # Devices the file does not name are created under this asset, from what
                # the protocol says of them (VDA 5050 vehicles, Sparkplug devices).
                self._auto_area[name] = str(auto_area).strip("/")
                options["auto_discover"] = True
            elif not points.get(name):
                self.skipped[name] = "no signal is bound to it"
                continue
            connector = create_connector(
                conn.protocol,
                name,
                self._endpoints.get(name, conn.endpoint),
                points[name],
                options,
                dead_letter_sink=self.historian.append_dead_letters,
                event_sink=self._event_sink(name),
            )
            connector.clock = self.clock
            self.connectors.append(connector)
        if self._alarms_enabled and self.factory.document.alarms.rules:
            from shopfloor.analytics.alarms import AlarmEngine

            self.alarms = await AlarmEngine(
                self.factory, self.historian, on_events=self._tell_event_observers
            ).__aenter__()
            self.pipeline.observers.append(self.alarms)
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._writer = self._group.create_task(self.pipeline.run(), name="pipeline-writer")
        for c in self.connectors:
            task = self._group.create_task(c.run(self.pipeline.sink), name=f"connector:{c.name}")
            self._connector_tasks.append(task)
        return self

    def _event_sink(self, connection: str) -> TableSink:
        """Events of ``connection`` with the device's own id replaced by its asset path.

        Connectors name the device as the protocol does (a VDA 5050 serial number, the first
        segment of the binding addresses); the factory file's bindings say which asset it is.
        """
        devices = self._devices.setdefault(connection, {})

        async def sink(events: pa.Table) -> None:
            assets = [devices.get(a, a) for a in events.column("asset").to_pylist()]
            idx = events.schema.get_field_index("asset")
            events = events.set_column(idx, "asset", pa.array(assets, pa.string()))
            await self.historian.append_events(events)
            self.events_stored += events.num_rows
            for observer in self.event_observers:
                try:
                    await observer(events)
                except Exception:
                    log.exception("event observer %r failed", observer)

        return sink

    async def _tell_event_observers(self, events: pa.Table) -> None:
        """Pass events stored by an engine (alarms, anomalies) on to the event observers."""
        for observer in self.event_observers:
            try:
                await observer(events)
            except Exception:
                log.exception("event observer %r failed", observer)

    async def _resolve(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Route]:
        """Create signals for unknown addresses of connections with ``auto_area``."""
        by_name = {c.name: c for c in self.connectors}
        found: dict[tuple[str, str], tuple[str, SignalInfo]] = {}
        for conn_name, addr in keys:
            area = self._auto_area.get(conn_name)
            connector = by_name.get(conn_name)
            info = None if area is None or connector is None else connector.describe(addr)
            if info is None:
                continue  # stays unknown: a dead letter, as always
            devices = self._devices.setdefault(conn_name, {})
            asset = devices.get(info.asset) or f"{area}/{_slug(info.asset)}"
            devices[info.asset] = asset
            path = f"{asset}/{info.name}"
            signal = SignalInfo(path, info.data_type, info.unit, info.kind)  # type: ignore[arg-type]
            found[(conn_name, addr)] = (info.data_type, signal)
        if not found:
            return {}
        ids = await self.historian.register_signals([sig for _, sig in found.values()])
        routes = {}
        new: dict[str, int] = defaultdict(int)
        for key, (data_type, sig) in found.items():
            routes[key] = Route(ids[sig.path], data_type)
            if sig.path not in self.signal_ids:
                self.discovered[sig.path] = sig
                new[key[0]] += 1
                log.debug("new signal %s (from %s %s)", sig.path, key[0], key[1])
            self.signal_ids[sig.path] = ids[sig.path]
        for conn_name, count in new.items():  # one line per batch, not one per signal
            log.info("%d new signal(s) from connection %s", count, conn_name)
        return routes

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self.pipeline is not None
        for task in self._connector_tasks:
            task.cancel()
        await asyncio.gather(*self._connector_tasks, return_exceptions=True)
        # Connectors flush their last batch on cancellation; then the writer drains.
        await self.pipeline.close()
        try:
            await self._group.__aexit__(exc_type, exc, tb)
        finally:
            if self.alarms is not None:  # after the last batch went through it
                await self.alarms.__aexit__(exc_type, exc, tb)
