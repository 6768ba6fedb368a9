"""``shopfloor alarms``: the active alarm list, acknowledging, shelving, the alarm journal.

The commands work on the alarm records in the historian (see
:mod:`shopfloor.analytics.alarms`). An embedded DuckDB file is held by the process that
runs the platform, so with DuckDB use them while ``shopfloor up`` is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shopfloor.analytics.alarms import (
    AlarmDefinition,
    AlarmManager,
    AlarmStatus,
    alarm_log,
)
from shopfloor.cli._query import _open_existing, parse_duration, parse_time
from shopfloor.errors import ShopfloorError
from shopfloor.model import FactoryFileError, load_factory
from shopfloor.model._alarms import alarm_instances

__all__ = ["app"]

app = typer.Typer(
    help="Active alarms, acknowledging and shelving them, and the alarm journal.",
    no_args_is_help=True,
)

_DB = typer.Option("duckdb:shopfloor.duckdb", "--db", help="Historian URL (or a .duckdb path).")
_FACTORY = typer.Option(
    None, "--factory", help="Factory file: lets you shelve alarms that are not active."
)
_STYLE = {
    "unack_active": "bold red",
    "ack_active": "yellow",
    "rtn_unack": "magenta",
    "normal": "green",
}

T = TypeVar("T")


def _user(user: str | None) -> str:
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container without a passwd entry)
        return "unknown"


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    err = Console(stderr=True)
    try:
        return asyncio.run(work())
    except FactoryFileError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from exc
    except ShopfloorError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@contextlib.asynccontextmanager
async def _manager(db: str, factory_file: Path | None) -> AsyncIterator[AlarmManager]:
    definitions: list[AlarmDefinition] = []
    if factory_file is not None:
        factory = load_factory(factory_file)
        definitions = [AlarmDefinition.of(i) for i in alarm_instances(factory)]
    async with _open_existing(db) as historian:
        manager = AlarmManager(historian, definitions)
        await manager.restore()
        yield manager


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def _print_status(rows: list[AlarmStatus], title: str) -> None:
    out = Table(title=title)
    for col in ("alarm", "state", "priority", "since (UTC)", "value", "message", "shelved until"):
        out.add_column(col)
    for s in rows:
        style = _STYLE.get(s.state.value, "white")
        out.add_row(
            s.alarm_id,
            f"[{style}]{s.state.value}[/]",
            f"{s.definition.priority} ({s.severity})",
            _when(s.activated_at),
            _value(s.value),
            s.message,
            _when(s.shelved_until),
        )
    Console().print(out)
    Console().print(f"{len(rows)} alarm(s)", style="dim")


@app.command("list")
def list_(
    db: str = _DB,
    shelved: bool = typer.Option(False, "--shelved", help="List the shelf instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The active alarm list (alarms not back to normal), most severe first."""

    async def work() -> list[AlarmStatus]:
        async with _manager(db, None) as m:
            return m.shelved() if shelved else m.active(include_shelved=True)

    rows = _run(work)
    if as_json:
        typer.echo(json.dumps([_as_json(s) for s in rows], ensure_ascii=False))
        return
    _print_status(rows, "shelved alarms" if shelved else "active alarms")


def _as_json(s: AlarmStatus) -> dict[str, Any]:
    return {
        "alarm_id": s.alarm_id,
        "state": s.state.value,
        "severity": s.severity,
        "priority": s.definition.priority,
        "active": s.active,
        "acked": s.acked,
        "activated_at": None if s.activated_at is None else s.activated_at.isoformat(),
        "activations": s.activations,
        "value": s.value,
        "message": s.message,
        "shelved_until": None if s.shelved_until is None else s.shelved_until.isoformat(),
        "acked_by": s.acked_by,
    }


@app.command("ack")
def ack(
    alarm_id: str = typer.Argument(..., help="Alarm id: <asset path>/<rule id>."),
    db: str = _DB,
    user: str | None = typer.Option(None, "--user", help="Who acknowledges (default: login)."),
    comment: str = typer.Option("", "--comment", help="Why, what was done."),
) -> None:
    """Acknowledge an alarm."""

    async def work() -> AlarmStatus:
        async with _manager(db, None) as m:
            return await m.acknowledge(alarm_id, _user(user), comment)

    status = _run(work)
    typer.echo(f"{alarm_id}: acknowledged, now {status.state.value}")


@app.command("shelve")
def shelve(
    alarm_id: str = typer.Argument(..., help="Alarm id: <asset path>/<rule id>."),
    db: str = _DB,
    for_: str = typer.Option("1h", "--for", help="How long: 30m, 2h, 8h …"),
    user: str | None = typer.Option(None, "--user", help="Who shelves (default: login)."),
    reason: str = typer.Option("", "--reason", help="Why."),
    factory_file: Path | None = _FACTORY,
) -> None:
    """Shelve an alarm: no notifications until the shelf expires or it is unshelved."""
    try:
        span = parse_duration(for_)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    async def work() -> AlarmStatus:
        async with _manager(db, factory_file) as m:
            return await m.shelve(alarm_id, span, _user(user), reason)

    status = _run(work)
    typer.echo(f"{alarm_id}: shelved until {_when(status.shelved_until)} UTC")


@app.command("unshelve")
def unshelve(
    alarm_id: str = typer.Argument(..., help="Alarm id: <asset path>/<rule id>."),
    db: str = _DB,
    user: str | None = typer.Option(None, "--user", help="Who unshelves (default: login)."),
    reason: str = typer.Option("", "--reason", help="Why."),
) -> None:
    """Take an alarm off the shelf."""

    async def work() -> AlarmStatus:
        async with _manager(db, None) as m:
            return await m.unshelve(alarm_id, _user(user), reason)

    status = _run(work)
    typer.echo(f"{alarm_id}: unshelved, now {status.state.value}")


@app.command("log")
def log_(
    db: str = _DB,
    since: str = typer.Option("-1d", "--since", help="Start: ISO 8601, 'now' or -1h, -7d …"),
    until: str = typer.Option("+1d", "--until", help="End (exclusive), same forms."),
    asset: str | None = typer.Option(None, "--asset", help="Only alarms of this asset path."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="At most N entries."),
) -> None:
    """The alarm journal: every transition with its time, user and comment."""
    try:
        now = datetime.now(UTC)
        start, end = parse_time(since, now), parse_time(until, now)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    async def work() -> list[dict[str, Any]]:
        async with _open_existing(db) as h:
            table = await alarm_log(h, start, end, asset_prefix=asset, limit=limit)
            rows: list[dict[str, Any]] = table.to_pylist()
            return rows

    rows = _run(work)
    out = Table(title="alarm journal")
    for col in ("time (UTC)", "alarm", "transition", "state", "user", "comment"):
        out.add_column(col)
    for r in rows:
        data = json.loads(r["data"] or "{}")
        out.add_row(
            _when(r["ts"]),
            str(data.get("alarm_id", "")),
            str(r["code"]),
            str(data.get("state", "")),
            str(data.get("user") or ""),
            str(data.get("comment") or ""),
        )
    Console().print(out)
    Console().print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}", style="dim")
