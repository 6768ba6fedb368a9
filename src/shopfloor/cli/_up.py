"""``shopfloor up`` and ``shopfloor demo``: run the embedded platform with a live status view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from shopfloor.bus import DEFAULT_PREFIX, UnsPublisher
from shopfloor.cli._api import (
    API_AUTH_DB_OPT,
    API_CERT_OPT,
    API_HOST_OPT,
    API_KEY_OPT,
    API_PORT_OPT,
    ApiOptions,
    RunningApi,
    api_options,
    attach_runtime,
    start_api,
)
from shopfloor.cli._logs import LOG_FORMAT_OPT, LogFormat, setup_logging
from shopfloor.edge.batch import to_us
from shopfloor.errors import ConfigError, ShopfloorError
from shopfloor.historian import Historian, open_historian
from shopfloor.model import Factory, FactoryFileError, load_factory
from shopfloor.runtime import Runtime

__all__ = ["register"]

console = Console(stderr=True)


def _status(
    rt: Runtime,
    started: float,
    extra: Callable[[], Table] | None = None,
    uns: UnsPublisher | None = None,
) -> Group:
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
    if uns is not None:
        parts.append(_uns_table(uns))
    if extra is not None:
        parts.append(extra())
    return Group(*parts)


@contextlib.asynccontextmanager
async def _historian(db: str) -> AsyncIterator[Historian]:
    async with open_historian(db) as h:
        yield h


class UnsModeChoice(StrEnum):
    """``--uns-mode``: every value, or the newest of each signal per committed batch."""

    every = "every"
    latest = "latest"


@dataclass(frozen=True, slots=True)
class _Uns:
    """The ``--uns*`` options."""

    url: str
    prefix: str
    mode: UnsModeChoice
    retain: bool


def _uns_options(url: str | None, prefix: str, mode: UnsModeChoice, retain: bool) -> _Uns | None:
    """The ``--uns*`` options, checked before anything starts (:class:`ConfigError`)."""
    from shopfloor.bus.uns import _check_settings

    if url is None:
        return None
    _check_settings(url, prefix, mode.value, 0)
    return _Uns(url, prefix, mode, retain)


async def _embed_uns_broker(stack: contextlib.AsyncExitStack, uns: _Uns | None) -> None:
    """For the demo: no broker at a loopback ``--uns`` URL → start the embedded one there."""
    from shopfloor.bus import EmbeddedBroker, broker_reachable, mqtt_host_port

    if uns is None:
        return
    host, port = mqtt_host_port(uns.url)  # checked by _uns_options
    if host not in ("127.0.0.1", "localhost", "::1") or await broker_reachable(uns.url):
        return
    try:
        broker = await stack.enter_async_context(EmbeddedBroker(host, port))
    except ShopfloorError as exc:  # e.g. the port is taken by something that is not MQTT
        console.print(f"[yellow]{exc}[/]")
        return
    console.print(f"no MQTT broker at {uns.url}: started an embedded one at {broker.endpoint}")


async def _start_uns(
    stack: contextlib.AsyncExitStack, historian: Historian, uns: _Uns | None
) -> UnsPublisher | None:
    """The Unified Namespace publisher of the ``--uns*`` options (None without ``--uns``)."""
    from shopfloor.bus import broker_reachable

    if uns is None:
        return None
    publisher = UnsPublisher(
        uns.url, historian, prefix=uns.prefix, mode=uns.mode.value, retain=uns.retain
    )
    if not await broker_reachable(uns.url):
        console.print(
            f"[yellow]no MQTT broker at {uns.url} yet[/]: Unified Namespace messages wait in a "
            "bounded queue (the oldest are dropped) until it is reachable"
        )
    await stack.enter_async_context(publisher)
    where = f"{publisher.prefix}/…" if publisher.prefix else "the topic root"
    what = "every value" if uns.mode is UnsModeChoice.every else "the newest value per batch"
    kept = "retained" if uns.retain else "not retained"
    console.print(f"Unified Namespace: {uns.url}, {where} ({what}, {kept})")
    return publisher


def _observing(uns: UnsPublisher | None) -> dict[str, Any]:
    """The ``Runtime`` keyword arguments that make ``uns`` observe it."""
    if uns is None:
        return {}
    return {"observers": [uns.publish_readings], "event_observers": [uns.publish_events]}


def _uns_table(uns: UnsPublisher) -> Table:
    st = uns.stats
    table = Table(title="unified namespace", expand=False)
    for col in ("broker", "state", "published", "dropped", "queued", "last error"):
        table.add_column(col)
    table.add_row(
        uns.endpoint,
        "[green]connected[/]" if st.connected else "[yellow]disconnected[/]",
        f"{st.published:,}",
        f"{st.dropped:,}",
        f"{st.queued:,}",
        (st.last_error or "")[:80],
    )
    return table


async def _run_up(
    factory_file: Path,
    db: str,
    duration: float | None,
    live: bool,
    extra: Callable[[], Table] | None = None,
    uns_options: _Uns | None = None,
    api: ApiOptions | None = None,
) -> tuple[Runtime, UnsPublisher | None]:
    factory = load_factory(factory_file)
    async with contextlib.AsyncExitStack() as stack:
        historian = await stack.enter_async_context(_historian(db))
        uns = await _start_uns(stack, historian, uns_options)
        served = await start_api(stack, factory, historian, db, api)
        rt = await stack.enter_async_context(Runtime(factory, historian, **_observing(uns)))
        attach_runtime(stack, served, rt)
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        if live:
            with Live(
                _status(rt, started, extra, uns), console=console, refresh_per_second=2
            ) as view:
                while deadline is None or time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    view.update(_status(rt, started, extra, uns))
        elif deadline is not None:
            await asyncio.sleep(deadline - started)
        else:
            await asyncio.Event().wait()
    return rt, uns


def _summary(rt: Runtime, db: str, uns: UnsPublisher | None = None) -> None:
    assert rt.pipeline is not None
    st = rt.pipeline.stats
    console.print(
        f"[bold]stopped[/]: {st.values_stored:,} values stored in {db}, "
        f"{st.dead_letters:,} dead letters, nothing pending."
    )
    if uns is not None:
        console.print(
            f"Unified Namespace: {uns.stats.published:,} messages published to {uns.endpoint}, "
            f"{uns.stats.dropped:,} dropped."
        )
    if rt.alarms is not None:
        active = rt.alarms.manager.active(include_shelved=True)
        console.print(
            f"alarms: {len(active)} not back to normal ({len(rt.alarms.instances)} defined); "
            f"see: shopfloor alarms list --db {db}"
        )


_UNS_HELP = (
    "Republish every value on this MQTT broker (Unified Namespace), e.g. mqtt://127.0.0.1:1883."
)
_UNS_PREFIX_HELP = "Topic prefix of the Unified Namespace ('' for none)."
_UNS_MODE_HELP = (
    "every: each value; latest: the newest of each signal per batch (high-rate plants)."
)
_UNS_RETAIN_HELP = "Retain the last message of every topic (late subscribers see current values)."


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
        uns: str | None = typer.Option(None, "--uns", help=_UNS_HELP),
        uns_prefix: str = typer.Option(DEFAULT_PREFIX, "--uns-prefix", help=_UNS_PREFIX_HELP),
        uns_mode: UnsModeChoice = typer.Option(UnsModeChoice.every, help=_UNS_MODE_HELP),
        uns_retain: bool = typer.Option(
            True, "--uns-retain/--no-uns-retain", help=_UNS_RETAIN_HELP
        ),
        api_port: int | None = API_PORT_OPT,
        api_host: str = API_HOST_OPT,
        auth_db: Path | None = API_AUTH_DB_OPT,
        api_cert: Path | None = API_CERT_OPT,
        api_key: Path | None = API_KEY_OPT,
        log_format: LogFormat = LOG_FORMAT_OPT,
    ) -> None:
        """Run the connectors of a factory file into the embedded historian."""
        setup_logging(log_format)
        try:
            options = _uns_options(uns, uns_prefix, uns_mode, uns_retain)
            api = api_options(api_port, api_host, auth_db, api_cert, api_key)
            rt, publisher = asyncio.run(
                _run_up(factory_file, db, duration, live, uns_options=options, api=api)
            )
        except FactoryFileError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        except ConfigError as exc:
            console.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print("[bold]interrupted[/]: everything accepted was flushed.")
            return
        _summary(rt, db, publisher)


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


class _DemoClock:
    """The demo's clock (the API's "now"): the wall clock until the simulator runs, then
    the simulated time, which its data is stamped with.

    The simulator starts at wall-clock now, so the switch is continuous, but for the
    seconds its servers took to start: the clock never goes back, it waits for the
    simulated time to catch up (at ``speed``, within a fraction of a second).
    """

    def __init__(self) -> None:
        self._source: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._last = datetime.min.replace(tzinfo=UTC)

    def follow(self, source: Callable[[], datetime]) -> None:
        """From now on, tell the time of ``source`` (never earlier than told before)."""
        self._source = source

    def __call__(self) -> datetime:
        self._last = max(self._last, self._source())
        return self._last


async def _run_demo(
    factory_file: Path,
    db: str,
    speed: float,
    seed: int,
    port_offset: int,
    duration: float | None,
    live: bool,
    uns_options: _Uns | None = None,
    api: ApiOptions | None = None,
    access: DemoAccess | None = None,
) -> tuple[Runtime, dict[str, int], dict[str, int], UnsPublisher | None]:
    from shopfloor.cli._sim import _view
    from shopfloor.sim import Simulator, simulate_devices

    factory = load_factory(factory_file)
    async with contextlib.AsyncExitStack() as stack:
        # The API and dashboard first: they answer (without the runtime) within seconds,
        # while the simulated servers take a while to start.
        historian = await stack.enter_async_context(_historian(db))
        clock = _DemoClock()
        served = await start_api(stack, factory, historian, db, api, clock)
        await _announce(stack, served, factory, access or DemoAccess())
        await _embed_uns_broker(stack, uns_options)
        sim = await stack.enter_async_context(
            Simulator(factory, speed=speed, seed=seed, port_offset=port_offset)
        )
        # From here the API and the dashboard tell simulated time, like the data.
        clock.follow(lambda: sim.now)
        if served is not None:
            served.app.state.ctx.speed = sim.speed
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
        uns = await _start_uns(stack, historian, uns_options)
        endpoints = sim.endpoints | devices.endpoints | mqtt
        # The connectors stamp what the devices do not (Modbus polls) with simulated time.
        rt = await stack.enter_async_context(
            Runtime(
                factory,
                historian,
                endpoint_override=endpoints,
                clock=lambda: to_us(clock()),
                **_observing(uns),
            )
        )
        attach_runtime(stack, served, rt)
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        console.print(f"simulated factory [bold]{factory_file}[/] at ×{speed:g} → {db}")
        for name, ep in sorted(endpoints.items()):
            console.print(f"  {name}: {ep}")
        for name, why in devices.skipped.items():
            console.print(f"  [yellow]{name}[/]: {why}")

        def status() -> Group:
            return Group(_view(sim), _status(rt, started, uns=uns))

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
    return rt, expected, stored, uns


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


DEMO_PORT = 8080
"""The demo's API and dashboard port when ``--port`` is not given."""


@dataclass(frozen=True, slots=True)
class DemoAccess:
    """How the demo opens its API: the admin token (``None``: a new one) and the browser."""

    token: str | None = None
    browser: bool = False


def _default_port(host: str) -> int:
    """:data:`DEMO_PORT`, or 0 (a free port) when something listens there already."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, DEMO_PORT))
        except OSError:
            console.print(f"port {DEMO_PORT} is taken: the API takes a free port")
            return 0
    return DEMO_PORT


async def _demo_token(
    stack: contextlib.AsyncExitStack, served: RunningApi, root: str, given: str | None
) -> str:
    """The demo's admin token for the whole factory: ``given`` (registered when new), or a
    new one revoked when ``stack`` closes."""
    from shopfloor.api import AuthError, AuthStore, Scope

    auth = served.app.state.ctx.auth
    assert isinstance(auth, AuthStore)
    if given is None:
        new = await auth.create_token(Scope.admin, [root], name="demo", actor="demo")

        async def revoke() -> None:
            try:
                await auth.revoke_token(new.info.id, actor="demo")
            except AuthError as exc:
                logging.getLogger(__name__).warning("the demo token stays valid: %s", exc)

        stack.push_async_callback(revoke)
        return new.token
    _, info = await auth.authenticate(given)
    if info is not None:
        if info.state() != "active":
            raise ConfigError(f"--token: that token is {info.state()} (in {auth.path})")
        if info.scope is not Scope.admin or not info.allows(root):
            raise ConfigError(
                f"--token: that token exists in {auth.path} with scope {info.scope.value} on "
                f"{', '.join(info.subtrees)}; the demo needs admin on {root}"
            )
        return given
    try:
        await auth.create_token(Scope.admin, [root], name="demo", actor="demo", token=given)
    except AuthError as exc:
        raise ConfigError(f"--token: {exc}") from exc
    return given


def _sole(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The one exception inside ``group`` (through nested groups), or None if several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


def _open_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser; False when there is none (a console browser
    such as lynx would take over the terminal the demo draws in)."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if type(browser) is webbrowser.GenericBrowser:
        return False
    return bool(browser.open(url, new=2))


async def _announce(
    stack: contextlib.AsyncExitStack,
    served: RunningApi | None,
    factory: Factory,
    access: DemoAccess,
) -> None:
    """Make the demo's token, print the dashboard's URL with it, open the browser."""
    from shopfloor.api import ApiServer

    if served is None:
        return
    token = await _demo_token(stack, served, factory.document.enterprise.id, access.token)
    s = served.server
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(s.host, s.host)
    dashboard = f"{ApiServer(local, s.port, s.tls).url}/#token={token}"
    typer.echo(f"dashboard: {dashboard}")
    typer.echo(f"token: {token}")
    kept = "kept in the token store" if access.token else "valid while the demo runs"
    console.print(f"(an admin token for the whole factory, {kept})")
    # Only for a person at a terminal: scripts and tests (stdout not a TTY) get the link.
    opened = access.browser and sys.stdout.isatty()
    if opened and not await asyncio.to_thread(_open_browser, dashboard):
        console.print("no graphical web browser found: open the dashboard URL above")


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
        uns: str | None = typer.Option(None, "--uns", help=_UNS_HELP),
        uns_prefix: str = typer.Option(DEFAULT_PREFIX, "--uns-prefix", help=_UNS_PREFIX_HELP),
        uns_mode: UnsModeChoice = typer.Option(UnsModeChoice.every, help=_UNS_MODE_HELP),
        uns_retain: bool = typer.Option(
            True, "--uns-retain/--no-uns-retain", help=_UNS_RETAIN_HELP
        ),
        port: int | None = typer.Option(
            None,
            "--port",
            "--api-port",
            min=0,
            max=65535,
            help=f"Port of the API and dashboard (default {DEMO_PORT}, a free one when taken).",
        ),
        api_host: str = API_HOST_OPT,
        auth_db: Path | None = API_AUTH_DB_OPT,
        api_cert: Path | None = API_CERT_OPT,
        api_key: Path | None = API_KEY_OPT,
        serve_api: bool = typer.Option(True, "--api/--no-api", help="Serve the API and dashboard."),
        token: str | None = typer.Option(
            None,
            "--token",
            help="The demo's admin token (sf_<12 hex>_<secret>, kept in the token store); "
            "default: a new one, revoked when the demo stops.",
        ),
        browser: bool = typer.Option(
            True, "--browser/--no-browser", help="Open the dashboard in a browser (at a terminal)."
        ),
        log_format: LogFormat = LOG_FORMAT_OPT,
    ) -> None:
        """Run the simulated factory and the whole platform embedded, in one process.

        The API and the dashboard are served on --port (8080) with an admin token, printed
        with the dashboard's URL. With ``--uns`` every value is also published on MQTT at
        its signal path; when no broker answers at a loopback ``--uns`` URL, an embedded one
        is started there.
        """
        from shopfloor.sim import SimulatorError

        setup_logging(log_format)
        try:
            options = _uns_options(uns, uns_prefix, uns_mode, uns_retain)
            api = None
            if serve_api:
                where = port if port is not None else _default_port(api_host)
                api = api_options(where, api_host, auth_db, api_cert, api_key)
            access = DemoAccess(token, browser)
            rt, expected, stored, publisher = asyncio.run(
                _run_demo(
                    factory_file, db, speed, seed, port_offset, duration, live, options, api, access
                )
            )
        except FactoryFileError as exc:
            console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        except ConfigError as exc:
            console.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from exc
        except SimulatorError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        except ExceptionGroup as group:
            # The simulator's task groups wrap what failed while they ran (a port in use).
            cause = _sole(group)
            if not isinstance(cause, ConfigError | SimulatorError):
                raise
            console.print(f"error: {cause}", markup=False)
            raise typer.Exit(1) from group
        except KeyboardInterrupt:
            console.print("[bold]interrupted[/]: everything accepted was flushed.")
            return
        _summary(rt, db, publisher)
        same = sum(stored.get(k) == v for k, v in expected.items())
        console.print(
            f"production counters: {same}/{len(expected)} in the historian equal the "
            "simulator's own."
        )
        example = next(iter(sorted(expected)), None)
        if example:
            console.print(f"try: shopfloor query {example} --db {db} --since -1d --until +1d")
