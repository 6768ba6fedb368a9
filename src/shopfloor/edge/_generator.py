"""Synthetic counters for load and fault tests: ``devices × signals`` values per tick.

Tick ``k`` is the instant ``k / rate`` seconds after the Unix epoch and every signal's value
at it is ``k`` (a float): the value says when it was taken, so whoever reads the historian
can tell exactly which ticks of which signal arrived — once, more than once, or not at all —
and whether the values of a signal follow each other in order, across restarts of the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from shopfloor.bus._codec import POINTS_SCHEMA
from shopfloor.edge.batch import RAW_SCHEMA, TS_TYPE, RawBatch

__all__ = ["CounterGenerator", "address", "generate", "parse_generate"]


def address(device: int, signal: int) -> str:
    """The address of ``signal`` of ``device``: ``dev00042/s007``."""
    return f"dev{device:05d}/s{signal:03d}"


def parse_generate(spec: str) -> tuple[int, int, float]:
    """``DEVICES,SIGNALS,RATE`` (e.g. ``3000,50,1``) as numbers; ValueError when malformed."""
    parts = spec.split(",")
    if len(parts) != 3:
        raise ValueError(f"--generate wants DEVICES,SIGNALS,RATE (e.g. 100,10,1), not {spec!r}")
    devices, signals, rate = int(parts[0]), int(parts[1]), float(parts[2])
    if devices < 1 or signals < 1 or not rate > 0:
        raise ValueError(f"--generate {spec!r}: every number must be positive")
    return devices, signals, rate


@dataclass(eq=False)
class CounterGenerator:
    """Readings of connection ``source`` whose signals live under asset path ``area``."""

    source: str
    area: str
    devices: int
    signals: int
    rate: float

    def __post_init__(self) -> None:
        n = self.devices * self.signals
        addresses = [address(d, s) for d in range(self.devices) for s in range(self.signals)]
        self._address = pa.array(addresses, pa.string())
        self._source = pa.array([self.source] * n, pa.string())
        self._quality = pa.array(np.full(n, 0xC0, np.uint8))
        self.points = pa.Table.from_pydict(
            {
                "source": self._source,
                "address": self._address,
                "path": [f"{self.area}/{a}" for a in addresses],
                "data_type": ["float"] * n,
                "unit": pa.nulls(n, pa.string()),
                "kind": ["measurement"] * n,
            },
            schema=POINTS_SCHEMA,
        )
        """The signal names of every address (sent with each batch)."""

    @property
    def values_per_tick(self) -> int:
        """Devices × signals."""
        return self.devices * self.signals

    def tick_now(self) -> int:
        """The next tick at or after the current time."""
        return math.ceil(time.time() * self.rate)

    def tick_time(self, k: int) -> float:
        """The Unix time of tick ``k``."""
        return k / self.rate

    def batch(self, first: int, last: int) -> RawBatch:
        """Ticks ``first`` … ``last`` (inclusive), tick by tick, every signal in each."""
        ticks = np.arange(first, last + 1, dtype=np.int64)
        n = self.values_per_tick
        ts_us = np.repeat(np.round(ticks * (1e6 / self.rate)).astype(np.int64), n)
        values = np.repeat(ticks.astype(np.float64), n)
        reps = len(ticks)
        table = pa.Table.from_arrays(
            [
                pa.chunked_array([self._source] * reps),
                pa.chunked_array([self._address] * reps),
                pa.array(ts_us, pa.int64()).cast(TS_TYPE),
                pa.chunked_array([self._quality] * reps),
                pa.array(values, pa.float64()),
                pa.nulls(n * reps, pa.int64()),
                pa.nulls(n * reps, pa.bool_()),
                pa.nulls(n * reps, pa.string()),
            ],
            schema=RAW_SCHEMA,
        )
        return RawBatch(table)


async def generate(
    gen: CounterGenerator,
    put: Callable[[RawBatch, pa.Table | None], Awaitable[None]],
    stop: asyncio.Event,
    accepted: Callable[[int, int, int], None] | None = None,
    *,
    max_ticks_per_batch: int | None = None,
) -> None:
    """Put the ticks of ``gen`` as they fall due until ``stop`` is set.

    ``put`` stores a batch (with the generator's points); ``accepted(first, last, values)``
    is called after it returned. When ``put`` is slower than the ticks, the ticks due are
    put together (at most ``max_ticks_per_batch``, default one second's worth).
    """
    most = max_ticks_per_batch or max(1, math.ceil(gen.rate))
    k = gen.tick_now()
    while not stop.is_set():
        due = gen.tick_time(k) - time.time()
        if due > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), due)
            continue
        last = min(k + most - 1, math.floor(time.time() * gen.rate))
        await put(gen.batch(k, last), gen.points)
        if accepted is not None:
            accepted(k, last, (last - k + 1) * gen.values_per_tick)
        k = last + 1
