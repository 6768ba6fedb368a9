"""``shopfloor up`` and ``shopfloor demo``: run the embedded platform with a live status view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, FactoryFileError, load_factory
from shopfloor.runtime import Runtime

__all__ = ["register"]

console = Console(stderr=True)


def _status(rt: Runtime, started: float, extra: Callable[[], Table] | None = None) -> Group:
    conns = Table(title="connections", expand=False)
    for col in ("name", "protocol", "state", "values", "reconnects", "last error"):
        conns.add_column(col)
    style = {"connected": "green", "disconnected": "yellow", "failed": "red"}
    for c in rt.connectors:
        s = c.status
        conns.add_row(
            s.name,
            s.protocol,
            f"[{style.get(s.state, 'white')}]{s.state}[/]",
            f"{s.values_total:,}",
            str(s.reconnects),
            (s.last_error or "")[:80],
        )
    for name, why in rt.skipped.items():
        conns.add_row(name, rt.factory.connections[name].protocol, "[dim]skipped[/]", "", "", why)
    assert rt.pipeline is not None
    st = rt.pipeline.stats
    pipe = Table(title="pipeline", expand=False)
    for col in ("uptime", "values/s", "received", "stored", "dead letters", "queue", "lag"):
        pipe.add_column(col, justify="right")
    pipe.add_row(
        f"{time.monotonic() - started:,.0f} s",
        f"{st.values_per_s():,.0f}",
        f"{st.values_in:,}",
        f"{st.values_stored:,}",
        f"{st.dead_letters:,}",
        str(st.queue_depth),
        f"{st.lag_ms:,.0f} ms",
    )
    parts: list[Table] = [conns, pipe]
    if extra is not None:
        parts.append(extra())
    return Group(*parts)


@contextlib.asynccontextmanager
async def _historian(db: str) -> AsyncIterator[Historian]:
    async with open_historian(db) as h:
        yield h


async def _run_up(
    factory_file: Path,
    db: str,
    duration: float | None,
    live: bool,
    extra: Callable[[], Table] | None = None,
) -> Runtime:
    factory = load_factory(factory_file)
    async with _historian(db) as historian, Runtime(factory, historian) as rt:
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        if live:
            with Live(_status(rt, started, extra), console=console, refresh_per_second=2) as view:
                while deadline is None or time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    view.update(_status(rt, started, extra))
        elif deadline is not None:
            await asyncio.sleep(deadline - started)
        else:
            await asyncio.Event().wait()
    return rt


def _summary(rt: Runtime, db: str) -> None:
    assert rt.pipeline is not None
    st = rt.pipeline.stats
    console.print(
        f"[bold]stopped[/]: {st.values_stored:,} values stored in {db}, "
        f"{st.dead_letters:,} dead letters, nothing pending."
    )
    if rt.alarms is not None:
        active = rt.alarms.manager.active(include_shelved=True)
        console.print(
            f"alarms: {len(active)} not back to normal ({len(rt.alarms.instances)} defined); "
            f"see: shopfloor alarms list --db {db}"
        )


def register(app: typer.Typer) -> None:
    """Add ``up`` and ``demo`` to the root command."""
    _register_demo(app)

    @app.command()
    def up(
        factory_file: Path = typer.Argument(..., help="Factory file (YAML)."),
        db: str = typer.Option("duckdb:shopfloor.duckdb", help="Historian URL."),
        duration: float | None = typer.Option(
            None, help="Stop after this many seconds (default: run until Ctrl-C)."
        ),
        live: bool = typer.Option(True, help="Show the live status view."),
    ) -> None:
        """Run the connectors of a factory file into the embedded historian."""
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            rt = asyncio.run(_run_up(factory_file, db, duration, live))
        except FactoryFileError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print("[bold]interrupted[/]: everything accepted was flushed.")
            return
        _summary(rt, db)


async def _mqtt_overrides(factory: Factory, stack: contextlib.AsyncExitStack) -> dict[str, str]:
    """Point MQTT connections whose broker is unreachable at one embedded broker."""
    from shopfloor.bus import EmbeddedBroker, broker_reachable

    mqtt = {n: c.endpoint for n, c in factory.connections.items() if c.protocol in _MQTT}
    down = [n for n, ep in mqtt.items() if not await broker_reachable(ep)]
    if not down:
        return {}
    broker = await stack.enter_async_context(EmbeddedBroker())
    console.print(
        f"no MQTT broker at {', '.join(sorted({mqtt[n] for n in down}))}: "
        f"started an embedded one at {broker.endpoint}"
    )
    return dict.fromkeys(down, broker.endpoint)


_MQTT = ("vda5050", "sparkplug", "mqtt")


async def _run_demo(
    factory_file: Path,
    db: str,
    speed: float,
    seed: int,
    port_offset: int,
    duration: float | None,
    live: bool,
) -> tuple[Runtime, dict[str, int], dict[str, int]]:
    from shopfloor.cli._sim import _view
    from shopfloor.sim import Simulator, simulate_devices

    factory = load_factory(factory_file)
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(
            Simulator(factory, speed=speed, seed=seed, port_offset=port_offset)
        )
        mqtt = await _mqtt_overrides(factory, stack)
        devices = await stack.enter_async_context(
            simulate_devices(
                factory,
                port_offset=port_offset,
                seed=seed,
                speed=speed,
                simulator=sim,
                endpoint_override=mqtt,
                agvs=True,
            )
        )
        historian = await stack.enter_async_context(_historian(db))
        endpoints = sim.endpoints | devices.endpoints | mqtt
        rt = await stack.enter_async_context(
            Runtime(factory, historian, endpoint_override=endpoints)
        )
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        console.print(f"simulated factory [bold]{factory_file}[/] at ×{speed:g} → {db}")
        for name, ep in sorted(endpoints.items()):
            console.print(f"  {name}: {ep}")
        for name, why in devices.skipped.items():
            console.print(f"  [yellow]{name}[/]: {why}")

        def status() -> Group:
            return Group(_view(sim), _status(rt, started))

        try:
            if live:
                with Live(status(), console=console, refresh_per_second=2) as view:
                    while deadline is None or time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                        view.update(status())
            elif deadline is not None:
                await asyncio.sleep(deadline - started)
            else:
                await asyncio.Event().wait()
        finally:
            # Freeze the simulation so that the final counters can be compared exactly.
            sim.pause()
            await sim.publish()
        expected = sim.counters()
        await _settle(rt, historian, expected)
        stored = await _stored_counters(historian, expected)
    return rt, expected, stored


async def _stored_counters(historian: Historian, names: dict[str, int]) -> dict[str, int]:
    table = await historian.latest(list(names))
    out: dict[str, int] = {}
    for row in table.to_pylist():
        if row["v_int"] is not None:
            out[row["path"]] = row["v_int"]
    return out


async def _settle(
    rt: Runtime, historian: Historian, expected: dict[str, int], within: float = 10.0
) -> None:
    """Wait until the historian holds the simulator's final counters (or the timeout)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await _stored_counters(historian, expected) == expected:
            return
        await asyncio.sleep(0.25)


def _register_demo(app: typer.Typer) -> None:
    @app.command()
    def demo(
        factory_file: Path = typer.Option(
            Path("examples/acme-munich.yaml"), "--factory", help="Factory file (YAML)."
        ),
        db: str = typer.Option("duckdb:shopfloor-demo.duckdb", help="Historian URL."),
        speed: float = typer.Option(60.0, help="Simulated seconds per real second."),
        seed: int = typer.Option(42, help="Random seed of the simulation."),
        port_offset: int = typer.Option(0, help="Add this to every simulated endpoint's port."),
        duration: float | None = typer.Option(
            None, help="Stop after this many real seconds (default: run until Ctrl-C)."
        ),
        live: bool = typer.Option(True, help="Show the live status view."),
    ) -> None:
        """Run the simulated factory and the whole platform embedded, in one process."""
        from shopfloor.sim import SimulatorError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            rt, expected, stored = asyncio.run(
                _run_demo(factory_file, db, speed, seed, port_offset, duration, live)
            )
        except FactoryFileError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        except SimulatorError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print("[bold]interrupted[/]: everything accepted was flushed.")
            return
        _summary(rt, db)
        same = sum(stored.get(k) == v for k, v in expected.items())
        console.print(
            f"production counters: {same}/{len(expected)} in the historian equal the "
            "simulator's own."
        )
        example = next(iter(sorted(expected)), None)
        if example:
            console.print(f"try: shopfloor query {example} --db {db} --since -1d --until +1d")
