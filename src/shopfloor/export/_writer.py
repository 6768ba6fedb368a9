"""Writing an open export: history, events and KPIs, streamed by day, asset and chunk.

Nothing is held whole: history is read one signal at a time in chunks of at most
``chunk_rows`` samples (resuming at the last timestamp, so equal timestamps are neither
lost nor repeated) and written to the asset's file of the day as it comes (Parquet: one
row group per chunk; CSV: appended); events are read one day at a time; KPIs one asset
and day at a time. ``dictionary.json`` is written last: an export without it is incomplete.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopfloor.analytics import oee
from shopfloor.errors import ShopfloorError
from shopfloor.export._csv import csv_bytes, csv_header
from shopfloor.export._dictionary import data_dictionary, signal_entries
from shopfloor.export._layout import partition_dir
from shopfloor.export._tables import (
    EVENTS,
    EVENTS_SCHEMA,
    HISTORY,
    HISTORY_SCHEMA,
    KPI_SCHEMA,
    KPIS,
    TableDoc,
    events_table,
    history_table,
    kpi_table,
)
from shopfloor.historian.base import Historian
from shopfloor.model import Factory

__all__ = [
    "WHAT",
    "ExportError",
    "ExportFile",
    "ExportFormat",
    "ExportResult",
    "ExportWhat",
    "Progress",
    "export_open",
    "kpi_assets",
]

log = logging.getLogger(__name__)

ExportWhat = Literal["history", "events", "kpis"]
ExportFormat = Literal["parquet", "csv"]
WHAT: Final[tuple[ExportWhat, ...]] = ("history", "events", "kpis")
"""What an export can hold, in the order it is written."""

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called after each step (a table, day and asset)."""

_DOCS: Final[dict[str, TableDoc]] = {"history": HISTORY, "events": EVENTS, "kpis": KPIS}
_DAY: Final = timedelta(days=1)
_MICROSECOND: Final = timedelta(microseconds=1)


class ExportError(ShopfloorError):
    """An export cannot be made: bad range or options, a used folder, a failing query."""


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One file written: its path relative to the export folder, its table and rows."""

    path: str
    table: str
    rows: int


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    out: Path
    dictionary: Path
    files: tuple[ExportFile, ...]
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0


def _covers(subtrees: Sequence[str], path: str) -> bool:
    return not subtrees or any(path == s or path.startswith(s + "/") for s in subtrees)


def kpi_assets(factory: Factory, under: Sequence[str] = ()) -> list[str]:
    """The assets an export computes KPIs for: equipment with an int ``state`` signal and a
    state map, and lines with at least one such equipment, within ``under`` (everything when
    empty)."""
    stateful = {
        s.asset_path
        for s in factory.signals()
        if s.name == "state" and s.data_type == "int" and factory.state_map(s.asset_path)
    }
    out = set()
    for a in factory.assets():
        if not _covers(under, a.path):
            continue
        is_machine = a.level == "equipment" and a.path in stateful
        if is_machine or (a.level == "line" and any(p.startswith(a.path + "/") for p in stateful)):
            out.add(a.path)
    return sorted(out)


class _PartWriter:
    """One partition file, written in row groups (Parquet) or appended (CSV)."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: ExportFormat, chunk_rows: int) -> None:
        self.path = path
        self.schema = schema
        self.fmt = fmt
        self.chunk_rows = chunk_rows
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: BinaryIO | None = None

    def write(self, table: pa.Table) -> None:
        """Add rows (:attr:`schema`); flushed when ``chunk_rows`` are pending."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self.rows += table.num_rows
        if self.fmt == "parquet":
            if self._parquet is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._parquet = pq.ParquetWriter(
                    self.path, self.schema, compression="snappy", store_schema=True
                )
            self._parquet.write_table(table, row_group_size=max(table.num_rows, 1))
            return
        if self._csv is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._csv = self.path.open("wb")
            self._csv.write(csv_header(self.schema))
        self._csv.write(csv_bytes(table))

    def close(self) -> int:
        """Write what is pending and close the file; return its rows (0: no file)."""
        self._flush()
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        return self.rows


async def _chunks(
    historian: Historian, signal: str, start: datetime, end: datetime, chunk_rows: int
) -> AsyncIterator[pa.Table]:
    """The raw samples of ``signal`` in ``[start, end)``, about ``chunk_rows`` at a time.

    A full chunk is cut before its last timestamp, whose samples are then read on their own
    (all of them: one instant), and the next chunk starts after it: samples sharing a
    timestamp are neither lost nor repeated, whatever order the engine gives ties.
    """
    frm = start
    while frm < end:
        t = await historian.read_raw(signal, frm, end, limit=chunk_rows)
        if t.num_rows < chunk_rows:
            if t.num_rows:
                yield t
            return
        ts = t.column("ts")
        last = ts[t.num_rows - 1]
        head = t.filter(pc.less(ts, last))
        if head.num_rows:
            yield head
        instant = last.as_py()
        after = instant + _MICROSECOND
        yield await historian.read_raw(signal, instant, min(after, end))
        frm = after


def _days(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    day = datetime(since.year, since.month, since.day, tzinfo=UTC)
    out = []
    while day < until:
        out.append((max(day, since), min(day + _DAY, until)))
        day += _DAY
    return out


def _check_out(out: Path, what: Iterable[str]) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")
    used = [p for p in [*(out / w for w in what), out / "dictionary.json"] if p.exists()]
    if used:
        raise ExportError(
            f"{out} already holds an export ({', '.join(p.name for p in used)}): choose an "
            "empty folder, or remove the old export first"
        )


async def export_open(
    historian: Historian,
    factory: Factory,
    out: str | Path,
    since: datetime,
    until: datetime,
    *,
    what: Sequence[ExportWhat] = WHAT,
    fmt: ExportFormat = "parquet",
    under: Sequence[str] = (),
    chunk_rows: int = 262_144,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``what`` of ``[since, until)`` to the folder ``out`` (see :mod:`shopfloor.export`).

    ``under`` limits the export to asset subtrees (everything when empty). Returns the files
    written with their rows; raises :class:`ExportError` for a bad range, an unknown table
    or format, or a folder that already holds an export.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ExportError("since and until need a time zone")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        raise ExportError(f"until ({until.isoformat()}) must lie after since ({since.isoformat()})")
    if fmt not in ("parquet", "csv"):
        raise ExportError(f"unknown format {fmt!r}: use parquet or csv")
    unknown = [w for w in what if w not in WHAT]
    if unknown or not what:
        raise ExportError(f"unknown export {', '.join(unknown) or '(none)'}: use {', '.join(WHAT)}")
    if chunk_rows < 1:
        raise ExportError(f"chunk_rows must be positive, got {chunk_rows}")
    wanted = [w for w in WHAT if w in what]
    subtrees = [u.strip().strip("/") for u in under if u.strip().strip("/")]
    out = Path(out)
    _check_out(out, wanted)
    out.mkdir(parents=True, exist_ok=True)
    ext = "parquet" if fmt == "parquet" else "csv"

    stored = await historian.signals()
    types = {
        str(p): str(t)
        for p, t in zip(
            stored.column("path").to_pylist(), stored.column("data_type").to_pylist(), strict=True
        )
        if _covers(subtrees, str(p))
    }
    by_asset: dict[str, list[str]] = defaultdict(list)
    for path in sorted(types):
        by_asset[path.rpartition("/")[0]].append(path)
    kpi_list = kpi_assets(factory, subtrees) if "kpis" in wanted else []
    days = _days(since, until)
    steps_per_day = (
        (len(by_asset) if "history" in wanted else 0)
        + (1 if "events" in wanted else 0)
        + len(kpi_list)
    )
    total, done = max(1, len(days) * steps_per_day), 0
    files: list[ExportFile] = []
    rows: dict[str, int] = dict.fromkeys(wanted, 0)
    assets: set[str] = set()
    now = datetime.now(UTC)

    def step(what_: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what_, done, total)

    def record(writer: _PartWriter, table: str, asset: str) -> None:
        n = writer.close()
        if n:
            files.append(ExportFile(writer.path.relative_to(out).as_posix(), table, n))
            rows[table] += n
            assets.add(asset)

    for first, (lo, hi) in enumerate(days):
        day = lo.date().isoformat()
        if "history" in wanted:
            for asset, signals in by_asset.items():
                w = _PartWriter(
                    partition_dir(out, "history", lo, asset) / f"part-0.{ext}",
                    HISTORY_SCHEMA,
                    fmt,
                    chunk_rows,
                )
                try:
                    for sig in signals:
                        async for chunk in _chunks(historian, sig, lo, hi, chunk_rows):
                            w.write(history_table(sig, types[sig], chunk))
                finally:
                    record(w, "history", asset)
                step(f"history {day}")
        if "events" in wanted:
            ev = await historian.read_events(lo, hi)
            if first:  # an event that began before this day is filed under its first day
                ev = ev.filter(
                    pc.greater_equal(ev.column("ts"), pa.scalar(lo, ev.schema.field("ts").type))
                )
            table = events_table(ev)
            if subtrees:
                keep = [_covers(subtrees, a) for a in table.column("asset_path").to_pylist()]
                table = table.filter(pa.array(keep, pa.bool_()))
            for asset in sorted(set(table.column("asset_path").to_pylist())):
                part = table.filter(pc.equal(table.column("asset_path"), asset))
                part = part.sort_by([("ts", "ascending"), ("event_id", "ascending")])
                w = _PartWriter(
                    partition_dir(out, "events", lo, asset) / f"part-0.{ext}",
                    EVENTS_SCHEMA,
                    fmt,
                    chunk_rows,
                )
                w.write(part)
                record(w, "events", asset)
            step(f"events {day}")
        for asset in kpi_list:
            end = min(hi, now)
            if end > lo:
                try:
                    kpis = await oee(historian, factory, asset, lo, end, "hour")
                except ValueError as exc:
                    raise ExportError(f"KPIs of {asset} on {day}: {exc}") from exc
                w = _PartWriter(
                    partition_dir(out, "kpis", lo, asset) / f"part-0.{ext}",
                    KPI_SCHEMA,
                    fmt,
                    chunk_rows,
                )
                w.write(kpi_table(kpis))
                record(w, "kpis", asset)
            step(f"kpis {day}")

    entries = [s for s in signal_entries(factory, stored) if _covers(subtrees, s["path"])]
    dictionary = data_dictionary(
        factory,
        entries,
        tables={w: _DOCS[w] for w in wanted},
        fmt=fmt,
        since=since,
        until=until,
        assets=assets | set(kpi_list),
        files=[{"path": f.path, "table": f.table, "rows": f.rows} for f in files],
        rows=rows,
    )
    dict_path = out / "dictionary.json"
    dict_path.write_text(json.dumps(dictionary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    size = sum((out / f.path).stat().st_size for f in files) + dict_path.stat().st_size
    log.info("exported %d files (%s rows) to %s", len(files), rows, out)
    return ExportResult(out, dict_path, tuple(files), rows, size)
