"""``shopfloor sim``: serve a factory file's machines as simulated OPC UA and Modbus servers,
and drive its AGV fleets against their MQTT broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    from shopfloor.sim import Simulator
    from shopfloor.sim._sparkplug import SparkplugEdgeSimulator

__all__ = ["register"]

console = Console(stderr=True)

_STYLE = {
    "running": "green",
    "idle": "cyan",
    "starved": "yellow",
    "blocked": "yellow",
    "planned_stop": "blue",
    "unplanned_stop": "red",
    "setup": "magenta",
    "offline": "dim",
}


def _view(sim: Simulator, devices: dict[str, str] | None = None) -> Group:
    engine = sim.engine
    types = {s.path: s.type for s in engine.stations}
    header = Table.grid(padding=(0, 2))
    header.add_row(
        f"[bold]simulated time[/] {sim.now.isoformat(timespec='seconds')}",
        f"speed ×{sim.speed:g}",
        *(f"{name}: {ep}" for name, ep in {**sim.endpoints, **(devices or {})}.items()),
    )
    tables: list[Table] = []
    for line, stations in sim.layout.lines.items():
        table = Table(title=line or "stand-alone equipment", expand=False, title_justify="left")
        for col, justify in (
            ("station", "left"),
            ("type", "left"),
            ("state", "left"),
            ("good", "right"),
            ("reject", "right"),
            ("failures", "right"),
        ):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for path in stations:
            state = engine.state_of(path)
            p = engine.production(path)
            table.add_row(
                path.rsplit("/", 1)[-1],
                types[path],
                f"[{_STYLE.get(state, 'white')}]{state}[/]",
                f"{p['good']:,}",
                f"{p['reject']:,}",
                str(p["failures"]),
            )
        tables.append(table)
    return Group(header, *tables)


async def _serve(
    factory_file: Path,
    speed: float,
    seed: int,
    host: str | None,
    port_offset: int,
    start: datetime | None,
    duration: float | None,
    live: bool,
    modbus_port: int | None = None,
    agvs: bool | None = None,
    sparkplug: SparkplugEdgeSimulator | None = None,
) -> dict[str, str]:
    from shopfloor.model import load_factory
    from shopfloor.sim import Simulator
    from shopfloor.sim._devices import simulate_devices

    factory = load_factory(factory_file)
    async with (
        Simulator(
            factory, speed=speed, seed=seed, host=host, port_offset=port_offset, start=start
        ) as sim,
        simulate_devices(
            factory,
            port_offset=port_offset,
            seed=seed,
            speed=speed,
            host=host,
            modbus_port=modbus_port,
            agvs=agvs,
            simulator=sim,
        ) as devices,
        sparkplug or contextlib.nullcontext(),
    ):
        _print_sparkplug(sparkplug)
        handled = {n for n, c in factory.connections.items() if c.protocol in ("modbus", "vda5050")}
        for name, why in sim.layout.skipped.items():
            if name not in handled:
                console.print(f"[dim]{name}: not served ({why})[/]")
        for name, what in devices.running.items():
            console.print(f"{name}: {what}", markup=False)
        for name, why in devices.skipped.items():
            console.print(f"[yellow]{name}: {why}[/]")
        deadline = None if duration is None else time.monotonic() + duration

        def remaining() -> float:
            return 0.5 if deadline is None else max(min(0.5, deadline - time.monotonic()), 0.0)

        if live:
            ends = devices.endpoints
            with Live(_view(sim, ends), console=console, refresh_per_second=2) as view:
                while deadline is None or time.monotonic() < deadline:
                    await asyncio.sleep(remaining())
                    view.update(_view(sim, ends))
        elif duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
        return sim.states()


# --- Sparkplug edge simulation (--sparkplug) -------------------------------------------


def _print_sparkplug(spb: SparkplugEdgeSimulator | None) -> None:
    if spb is not None:
        console.print(
            f"sparkplug: {spb.n_nodes * spb.devices_per_node:,} devices on {spb.n_nodes} edge "
            f"nodes × {spb.metrics_per_device} metrics @ {spb.rate_hz:g} Hz "
            f"({spb.values_per_s:,.0f} values/s), group {spb.group_id!r}, "
            f"broker {spb.host}:{spb.port}",
            markup=False,
        )


async def _serve_sparkplug(spb: SparkplugEdgeSimulator, duration: float | None) -> None:
    """Run only the Sparkplug edges (no factory file) for ``duration`` s or until Ctrl-C."""
    async with spb:
        _print_sparkplug(spb)
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)


# ----------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the ``sim`` command to ``app``."""

    @app.command()
    def sim(
        factory_file: Path | None = typer.Argument(
            None, help="Factory file (YAML); optional with --sparkplug."
        ),
        speed: float = typer.Option(
            60.0, help="Simulated seconds per real second (60: a minute a second)."
        ),
        seed: int = typer.Option(42, help="Random seed: same seed, same factory, same run."),
        host: str | None = typer.Option(
            None, help="Serve on this host instead of the endpoints' (e.g. 0.0.0.0)."
        ),
        port_offset: int = typer.Option(0, help="Add this to every endpoint's port."),
        start: datetime | None = typer.Option(
            None,
            help="Simulated start time, ISO 8601 (naive = UTC; default: now).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"],
        ),
        duration: float | None = typer.Option(
            None, help="Stop after this many real seconds (default: until Ctrl-C)."
        ),
        live: bool = typer.Option(True, help="Show the live table of lines and stations."),
        modbus_port: int | None = typer.Option(
            None,
            help="Serve the first Modbus connection on this port (the next on the following "
            "ones) instead of its endpoint's port plus --port-offset.",
        ),
        agvs: bool | None = typer.Option(
            None,
            "--agvs/--no-agvs",
            help="Drive the AGV fleets of vda5050 connections against their MQTT broker "
            "(default: when the broker is reachable).",
        ),
        sparkplug: str | None = typer.Option(
            None,
            "--sparkplug",
            metavar="N_DEVICES:N_METRICS@RATE",
            help="Also run simulated Sparkplug B edge nodes (100 devices each), e.g. 3000:50@1.",
        ),
        sparkplug_broker: str = typer.Option(
            "mqtt://127.0.0.1:1883", "--sparkplug-broker", help="Broker of the Sparkplug edges."
        ),
        sparkplug_group: str = typer.Option(
            "shopfloor-sim", "--sparkplug-group", help="Sparkplug group id of the edges."
        ),
    ) -> None:
        """Serve a factory file's machines as simulated OPC UA and Modbus servers, and its
        AGVs (power-meter / legacy-press equipment: Modbus devices; vda5050: AGV fleet)."""
        from shopfloor.model import FactoryFileError
        from shopfloor.sim import SimulatorError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        spb = None
        if sparkplug is not None:
            from shopfloor.sim._sparkplug import sparkplug_simulator

            try:
                spb = sparkplug_simulator(sparkplug, sparkplug_broker, sparkplug_group, seed)
            except ValueError as exc:
                console.print(f"[red]error:[/] {exc}", highlight=False)
                raise typer.Exit(2) from exc
        if factory_file is None:
            if spb is None:
                console.print("[red]error:[/] give a factory file, or --sparkplug")
                raise typer.Exit(2)
            try:
                asyncio.run(_serve_sparkplug(spb, duration))
            except (OSError, TimeoutError) as exc:
                console.print(f"[red]error:[/] sparkplug: {exc}", highlight=False)
                raise typer.Exit(1) from exc
            except KeyboardInterrupt:
                console.print("[bold]stopped[/]")
            return
        try:
            asyncio.run(
                _serve(
                    factory_file,
                    speed,
                    seed,
                    host,
                    port_offset,
                    start,
                    duration,
                    live,
                    modbus_port,
                    agvs,
                    spb,
                )
            )
        except FactoryFileError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        except SimulatorError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print("[bold]stopped[/]")
