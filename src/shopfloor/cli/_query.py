"""``shopfloor query``: read one signal from the historian as a table, CSV or JSON."""

from __future__ import annotations

import asyncio
import csv
import difflib
import json
import math
import re
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian.base import Historian

__all__ = ["parse_duration", "parse_time", "register"]

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class OutputFormat(StrEnum):
    """How ``query`` prints its rows."""

    table = "table"
    csv = "csv"
    json = "json"


def parse_duration(text: str) -> timedelta:
    """``500ms``, ``10s``, ``1m``, ``15m``, ``1h``, ``1d``, ``2w`` or sums like ``7m13s``."""
    s = text.strip().lower()
    pos, total = 0, timedelta()
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 10s, 1m, 15m, 1h, 1d)")
    return total


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``now``, a relative time (``-1h``, ``-7d``, ``-90m``, ``+5m``) or ISO 8601.

    ISO times without a zone are taken as UTC. The result is aware (UTC).
    """
    ref = now or datetime.now(UTC)
    s = text.strip()
    if s.lower() == "now":
        return ref
    if s[:1] in "+-" and s[1:2].isdigit() and not re.match(r"^[+-]\d{4}-", s):
        delta = parse_duration(s[1:])
        return ref - delta if s[0] == "-" else ref + delta
    try:
        ts = datetime.fromisoformat(s)
    except ValueError as exc:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601, 'now', or relative like -1h, -7d)"
        ) from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": JSON has no literal for them
    return value


def _emit(table: pa.Table, fmt: OutputFormat, title: str, console: Console) -> None:
    rows = table.to_pylist()
    names = table.column_names
    if fmt is OutputFormat.json:
        sys.stdout.write(
            json.dumps([{k: _cell(v) for k, v in r.items()} for r in rows], ensure_ascii=False)
            + "\n"
        )
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(["" if r[k] is None else _cell(r[k]) for k in names])
    else:
        out = Table(title=title)
        for name in names:
            out.add_column(name, justify="left" if name in ("ts", "bucket") else "right")
        for r in rows:
            out.add_row(*("" if r[k] is None else str(_cell(r[k])) for k in names))
        console.print(out)
        console.print(f"{len(rows):,} row(s)", style="dim")


def _open_existing(db: str) -> Historian:
    """The historian at ``db``; a DuckDB file must exist (a query never creates one)."""
    from shopfloor.historian import open_historian
    from shopfloor.historian._duckdb import DuckDBHistorian

    historian = open_historian(db)
    if isinstance(historian, DuckDBHistorian):
        path = historian.path
        if path != ":memory:" and not Path(path).exists():
            raise HistorianError(f"no historian database at {path}")
    return historian


async def _query(
    db: str,
    signal: str,
    since: datetime,
    until: datetime,
    bucket: timedelta | None,
    limit: int | None,
) -> pa.Table:
    historian = _open_existing(db)
    async with historian as h:
        try:
            if bucket is None:
                return await h.read_raw(signal, since, until, limit=limit)
            result = await h.downsample(signal, since, until, bucket)
            return result if limit is None else result.slice(0, limit)
        except UnknownSignalError as exc:
            paths = (await h.signals()).column("path").to_pylist()
            close = difflib.get_close_matches(signal, paths, n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise UnknownSignalError(f"unknown signal {signal!r}{hint}") from exc


def register(app: typer.Typer) -> None:
    """Add the ``query`` command to ``app``."""

    @app.command("query")
    def query(
        signal: str = typer.Argument(..., help="Signal path, e.g. acme/munich/line-1/temp."),
        db: str = typer.Option(
            "duckdb:shopfloor.duckdb", "--db", help="Historian URL (or a .duckdb path)."
        ),
        since: str = typer.Option(
            "-1h",
            "--since",
            help="Start: ISO 8601 (without a zone = UTC), 'now', or relative (-1h, -7d).",
        ),
        until: str = typer.Option("now", "--until", help="End (exclusive), same forms as --since."),
        bucket: str | None = typer.Option(
            None, "--bucket", help="Downsample into buckets: 500ms, 10s, 1m, 15m, 1h, 1d."
        ),
        fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
        limit: int | None = typer.Option(None, "--limit", min=0, help="At most N rows."),
    ) -> None:
        """Raw samples or downsampled buckets of one signal."""
        console = Console()
        err = Console(stderr=True)
        try:
            now = datetime.now(UTC)
            start, end = parse_time(since, now), parse_time(until, now)
            width = parse_duration(bucket) if bucket is not None else None
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        if width is not None and width <= timedelta(0):
            err.print("[red]error:[/] --bucket must be positive")
            raise typer.Exit(2)
        try:
            table = asyncio.run(_query(db, signal, start, end, width, limit))
        except HistorianError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        title = f"{signal}  {start.isoformat()} … {end.isoformat()}"
        if width is not None:
            title += f"  bucket {bucket}"
        _emit(table, fmt, title, console)
