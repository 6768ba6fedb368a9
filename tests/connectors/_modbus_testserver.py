"""A real pymodbus TCP server for the Modbus connector tests, on a free loopback port.

Every unit id has four plain Python tables (coils, discrete inputs, input and holding
registers) that tests read and write directly; the server serves them through pymodbus's
``SimDevice`` action hook, counts the requests it receives and can answer chosen address
ranges with Modbus exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from shopfloor.connectors import Connector
from shopfloor.edge.batch import RawBatch

_TABLE_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "di", 4: "ir"}
_TABLE_OF_FC.update(dict.fromkeys((3, 6, 16, 22, 23), "hr"))
_READ_FC = {1: "coil", 2: "di", 3: "hr", 4: "ir"}


@dataclass
class Request:
    """One request the server received."""

    unit: int
    table: str
    address: int
    count: int


@dataclass
class ModbusTestServer:
    """pymodbus ``ModbusTcpServer`` serving ``units`` with ``size`` entries per table."""

    units: Sequence[int] = (1,)
    size: int = 2560
    host: str = "127.0.0.1"
    port: int = 0
    regs: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    bits: dict[int, dict[str, list[bool]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # (unit, table) → list of (first, last, exception code) answered with that exception
    fail: dict[tuple[int, str], list[tuple[int, int, int]]] = field(default_factory=dict)
    _server: ModbusTcpServer | None = None

    __test__ = False

    def __post_init__(self) -> None:
        assert self.size % 16 == 0
        for u in self.units:
            self.regs[u] = {"hr": [0] * self.size, "ir": [0] * self.size}
            self.bits[u] = {"coil": [False] * self.size, "di": [False] * self.size}

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    def reads(self, unit: int | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.table in _READ_FC.values() and (unit is None or r.unit == unit)
        ]

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            table = _READ_FC.get(pdu.function_code)
            if table is not None:
                self.requests.append(Request(pdu.dev_id, table, pdu.address, pdu.count))
        return pdu

    def _action(
        self, unit: int
    ) -> Callable[
        [int, int, int, int, list[int], list[int] | list[bool] | None],
        Awaitable[ExcCodes | None],
    ]:
        async def action(
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            table = _TABLE_OF_FC[fc]
            span = count * 16 if table in ("coil", "di") else count
            for first, last, code in self.fail.get((unit, table), []):
                if address <= last and first < address + span:
                    return ExcCodes(code)
            if values is not None:  # a write: keep our table in step
                if table == "coil":
                    self.bits[unit]["coil"][address : address + len(values)] = [
                        bool(v) for v in values
                    ]
                else:
                    self.regs[unit]["hr"][address : address + len(values)] = [
                        int(v) for v in values
                    ]
            if table in ("coil", "di"):
                b = self.bits[unit][table]
                for k in range(len(b) // 16):
                    registers[k] = sum(1 << i for i, x in enumerate(b[16 * k : 16 * k + 16]) if x)
            else:
                registers[: self.size] = self.regs[unit][table]
            return None

        return action

    def _device(self, unit: int) -> SimDevice:
        def regs() -> list[SimData]:
            return [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]

        def bits() -> list[SimData]:
            return [SimData(0, count=self.size, values=False, datatype=DataType.BITS)]

        return SimDevice(
            id=unit,
            simdata=(bits(), bits(), regs(), regs()),
            action=self._action(unit),  # type: ignore[arg-type]
        )

    async def start(self) -> None:
        server = ModbusTcpServer(
            [self._device(u) for u in self.units],
            address=(self.host, self.port),
            trace_pdu=self._trace,
        )
        await server.serve_forever(background=True)
        self._server = server
        if self.port == 0:
            self.port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> ModbusTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Collector:
    """A batch sink that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[RawBatch] = []
        self.changed = asyncio.Event()

    async def __call__(self, batch: RawBatch) -> None:
        self.batches.append(batch)
        self.changed.set()

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for b in self.batches:
            out.extend(b.table.to_pylist())
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last row per address."""
        return {r["address"]: r for r in self.rows()}

    def clear(self) -> None:
        self.batches.clear()

    async def wait(self, cond: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``cond()`` holds (re-checked after every batch)."""
        async with asyncio.timeout(within):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


def value_of(row: dict[str, Any]) -> Any:
    for col in ("v_float", "v_int", "v_bool", "v_str"):
        if row[col] is not None:
            return row[col]
    return None


async def wait_until(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``cond`` until it holds (for conditions no batch signals, e.g. a status)."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - a status has no event to wait on
            await asyncio.sleep(0.01)


class Running:
    """``async with Running(connector) as sink:`` runs the connector in a task."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.sink = Collector()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self.connector.run(self.sink))
        return self.sink

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
