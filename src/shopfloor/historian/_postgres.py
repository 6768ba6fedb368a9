"""The server historian engine: PostgreSQL (optionally with TimescaleDB), via psycopg 3.

Layout (in one schema, ``public`` unless the URL says ``?schema=``; DDL in
:mod:`shopfloor.historian._pgsql`), the same tables as the DuckDB engine so that both
answer every query identically:

* ``signals`` — the catalog; ``signal_id`` is an identity column.
* ``samples`` — the narrow table ``(signal_id, ts, quality, v_float, v_int, v_bool, v_str)``
  with ``ts`` a ``bigint`` of UTC microseconds (exact integer bucket arithmetic, and the
  Arrow int64 column goes into ``COPY`` as is), indexed on ``(signal_id, ts)``. It is
  *time-partitioned* by UTC day: natively (``PARTITION BY RANGE (ts)``, one partition
  ``samples_YYYYMMDD`` per day, created on demand for the days a batch touches), or as a
  TimescaleDB hypertable with one-day chunks and native compression (segmented by signal,
  for chunks older than :data:`~shopfloor.historian._pgsql.COMPRESS_AFTER`) when the
  extension can be created (``?timescale=auto``, the default; ``on`` requires it, ``off``
  never uses it).
* ``rollup_1m`` and ``rollup_1h`` (bucket column ``minute`` / ``hour``) — per signal and
  bucket: first/last with their timestamps, min, max, sum and count of the samples
  aggregates consider; float signals use ``first … sum`` (``double precision``), int and
  bool signals the ``i_*`` columns (``bigint``, ``numeric`` sum: int64 values stay exact).
* ``latest`` — the newest sample of each signal.
* ``ingested_batches`` — the ids of the bus batches :meth:`append_once` stored, written in
  the same transaction as their samples (a batch delivered twice is stored once).
* ``events``, ``dead_letters``, ``historian_settings`` (how ``samples`` is partitioned) and
  ``schema_version``.

**Appends** run in one transaction: the batch goes into ``samples`` by binary ``COPY``
(encoded column-wise with NumPy); its per-minute and per-hour aggregates and newest rows,
also computed with NumPy (:mod:`shopfloor.historian._pgbatch`, in a worker thread), are
copied into session-temporary staging tables and merged into the rollup tables and
``latest`` with ``INSERT … ON CONFLICT DO UPDATE`` in key order (so concurrent writers lock
rows in the same order). Late and out-of-order data therefore stays correct.

**Retention** drops whole day partitions (or TimescaleDB chunks) that end at or before the
cut, and deletes the rest of the partial day with ``DELETE``; rollups, latest values, ended
events and dead letters are deleted with ``DELETE`` (the hour holding the cut is rebuilt
from its remaining minutes). The sample count reported is counted (``count(*)``) before
each partition is dropped.

**Schema migrations** are ordered steps recorded in ``schema_version``; :meth:`open` applies
the missing ones in one transaction under an advisory lock, so any number of processes may
open the same schema at once. Partitions are created under another advisory lock.

**Connections** come from a psycopg ``AsyncConnectionPool``; each is set to the schema, to
UTC and to ``jit = off``, and gets its staging tables, when it is created. Operations may
run concurrently.

Large results are read with binary ``COPY … TO STDOUT`` of fixed-width columns and decoded
by one NumPy view (string samples come back as two ``bytea`` aggregates: fixed-width records
and the concatenated text, so one ``read_raw`` of strings is limited to 1 GB); the catalog,
latest values, events and dead letters — a row per signal or per event, not per sample — are
fetched as rows. PostgreSQL ``text`` cannot hold NUL characters: such strings are rejected.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from shopfloor.edge.batch import TS_TYPE, ReadingBatch, to_us
from shopfloor.errors import HistorianError, UnknownSignalError
from shopfloor.historian._duckdb import (
    _DATA_TYPES,
    _VALUE_COLUMN,
    _VALUE_TYPE,
    _conform,
    _empty_downsample,
)
from shopfloor.historian._pgbatch import PreparedBatch, prepare_batch
from shopfloor.historian._pgcopy import CopyColumn, PgType, decode_fixed, encode_binary
from shopfloor.historian._pgsql import (
    DAY,
    DOWNSAMPLE_VALUE,
    HOUR,
    MIGRATIONS,
    MINUTE,
    ROLLUPS,
    SCHEMA_VERSION,
    STAGING_DDL,
    TimescaleMode,
    merge_stage_sql,
    raw_downsample_sql,
    read_rollups_sql,
    rebuild_hours_sql,
    rollup_downsample_sql,
)
from shopfloor.historian.base import (
    DEAD_LETTER_SCHEMA,
    EVENT_SCHEMA,
    ROLLUP_COLUMNS,
    Granularity,
    Historian,
    RetentionResult,
    SignalInfo,
)

__all__ = ["SCHEMA_VERSION", "PostgresHistorian", "TimescaleMode", "parse_postgres_url"]

_PARTITIONS_PER_TX: Final = 64
"""Partitions created per transaction (each takes a few locks)."""

_MAX_STRADDLES: Final = 1_000_000
"""Above this many bucket boundaries inside minutes, downsampling reads raw rows only."""

_LOCK_MIGRATE: Final = 0x5F00_0001
_LOCK_PARTITIONS: Final = 0x5F00_0002
"""Advisory lock classes; the second key is ``hashtext(schema)``."""

_PARTITION_NAME: Final = re.compile(r"^samples_(\d{8})$")

_DATE_ORIGIN: Final = date(1970, 1, 1)
_MIN_DAY: Final = (date(1, 1, 1) - _DATE_ORIGIN).days
_MAX_DAY: Final = (date(9999, 12, 31) - _DATE_ORIGIN).days

_RAW_VALUE: Final[dict[str, tuple[PgType, str]]] = {
    "v_float": ("float8", "0::float8"),
    "v_int": ("int8", "0::int8"),
    "v_bool": ("bool", "false"),
}
"""The COPY type of each fixed-width value column and the filler for its NULLs."""

_MERGES: Final[dict[str, str]] = {g: merge_stage_sql(r) for g, r in ROLLUPS.items()}
_COPY_STAGES: Final[dict[str, str]] = {
    g: f"COPY pg_temp.{r.stage} FROM STDIN (FORMAT BINARY)" for g, r in ROLLUPS.items()
}
_COPY_SAMPLES: Final = (
    "COPY samples (signal_id, ts, quality, v_float, v_int, v_bool, v_str) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_DEAD_LETTERS: Final = (
    "COPY dead_letters (received_at, source, location, reason, payload) FROM STDIN (FORMAT BINARY)"
)
_COPY_LATEST_STAGE: Final = "COPY pg_temp._latest_stage FROM STDIN (FORMAT BINARY)"
_COPY_EVENT_STAGE: Final = "COPY pg_temp._event_stage FROM STDIN (FORMAT BINARY)"

_MERGE_LATEST: Final = """
INSERT INTO latest (signal_id, ts, quality, v_float, v_int, v_bool, v_str)
SELECT signal_id, ts, quality, v_float, v_int, v_bool, v_str
FROM pg_temp._latest_stage
ORDER BY signal_id
ON CONFLICT (signal_id) DO UPDATE SET
    ts = excluded.ts, quality = excluded.quality, v_float = excluded.v_float,
    v_int = excluded.v_int, v_bool = excluded.v_bool, v_str = excluded.v_str
WHERE excluded.ts >= latest.ts
"""

_MERGE_EVENTS: Final = """
INSERT INTO events (event_id, kind, asset, signal, ts, end_ts, code, severity, message, data)
SELECT DISTINCT ON (event_id) event_id, kind, asset, signal, ts, end_ts, code, severity,
       message, data
FROM pg_temp._event_stage
ORDER BY event_id, _pos DESC
ON CONFLICT (event_id) DO UPDATE SET
    kind = excluded.kind, asset = excluded.asset, signal = excluded.signal, ts = excluded.ts,
    end_ts = excluded.end_ts, code = excluded.code, severity = excluded.severity,
    message = excluded.message, data = excluded.data
"""

_EVENT_TYPES: Final[tuple[PgType, ...]] = (
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "int2",
    "text",
    "text",
)
_DEAD_LETTER_TYPES: Final[tuple[PgType, ...]] = ("timestamptz", "text", "text", "text", "bytea")

# ---------------------------------------------------------------------------------------
# URLs


def _int_option(name: str, text: str, url: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HistorianError(f"historian URL {url!r}: {name}={text!r} is not an integer") from None
    if value < 1:
        raise HistorianError(f"historian URL {url!r}: {name} must be at least 1, got {value}")
    return value


def parse_postgres_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a ``postgresql://`` URL into the libpq URL and the historian's own options.

    The historian's query parameters are ``schema`` (default ``public``), ``timescale``
    (``auto``, ``on`` or ``off``), ``pool_min`` and ``pool_max``; every other parameter
    (``sslmode``, ``connect_timeout``, …) is passed on to libpq.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise HistorianError(f"not a PostgreSQL URL: {url!r}")
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not value:
                raise HistorianError(f"historian URL {url!r}: empty schema")
            ours["schema"] = value
        elif key == "timescale":
            if value not in ("auto", "on", "off"):
                raise HistorianError(
                    f"historian URL {url!r}: timescale must be auto, on or off, not {value!r}"
                )
            ours["timescale"] = value
        elif key in ("pool_min", "pool_max"):
            ours[key] = _int_option(key, value, url)
        else:
            rest.append((key, value))
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return conninfo, ours


def _redact(conninfo: str) -> str:
    """``conninfo`` without its password (for messages)."""
    parts = urlsplit(conninfo)
    if parts.password is None:
        return conninfo
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------------------


def _floor(x: int, step: int) -> int:
    return (x // step) * step


def _ceil(x: int, step: int) -> int:
    return -((-x) // step) * step


def _as_ts(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.int64()).cast(TS_TYPE)


def _partition_name(day: int) -> str:
    return f"samples_{_DATE_ORIGIN + timedelta(days=day):%Y%m%d}"


def _rows_to_table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Rows fetched in ``schema``'s column order as a table of that schema."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(field.type):
            values = tuple(None if v is None else v.astimezone(UTC) for v in values)
        arrays.append(pa.array(list(values), field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


Connection = psycopg.AsyncConnection[Any]


class _AlreadyStoredError(Exception):
    """Raised inside :meth:`PostgresHistorian.append_once`'s transaction to roll it back."""


class PostgresHistorian(Historian):
    """The :class:`~shopfloor.historian.base.Historian` on a PostgreSQL server.

    ``conninfo`` is a libpq URL or connection string; ``schema`` holds every table (created
    when missing); ``timescale`` says whether a *new* schema uses TimescaleDB (an existing
    one keeps how it was created); ``pool_min``/``pool_max`` size the connection pool and
    ``connect_timeout`` (seconds) bounds waiting for a connection. Usually made by
    :func:`shopfloor.historian.open_historian` from a ``postgresql://`` URL.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        timescale: TimescaleMode = "auto",
        pool_min: int = 1,
        pool_max: int = 4,
        connect_timeout: float = 30.0,
    ) -> None:
        if not schema:
            raise HistorianError("the historian schema name is empty")
        if timescale not in ("auto", "on", "off"):
            raise HistorianError(f"timescale must be auto, on or off, not {timescale!r}")
        if pool_min < 1 or pool_max < pool_min:
            raise HistorianError(f"bad pool size: pool_min={pool_min}, pool_max={pool_max}")
        self.conninfo = conninfo
        self.schema = schema
        self.timescale: TimescaleMode = timescale
        self.pool_min, self.pool_max = pool_min, pool_max
        self.connect_timeout = connect_timeout
        self.partitioning: str | None = None
        """``native`` or ``timescaledb`` once open."""
        self._pool: AsyncConnectionPool | None = None
        self._by_id: dict[int, tuple[str, str]] = {}
        self._by_path: dict[str, int] = {}
        self._partitions: set[int] = set()
        self._partition_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> PostgresHistorian:
        """The historian for a ``postgresql://`` URL (see :func:`parse_postgres_url`)."""
        conninfo, options = parse_postgres_url(url)
        return cls(conninfo, **options)

    @property
    def display(self) -> str:
        """Where the historian lives, without a password."""
        return f"{_redact(self.conninfo)} (schema {self.schema})"

    def __repr__(self) -> str:
        return f"PostgresHistorian({_redact(self.conninfo)!r}, schema={self.schema!r})"

    # -- plumbing ---------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Connection]:
        """A pooled connection; psycopg errors become :class:`HistorianError`."""
        pool = self._pool
        if pool is None:
            raise HistorianError(f"historian {self.display} is not open")
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise HistorianError(f"{what} failed on {self.display}: {exc}") from exc

    async def _configure(self, conn: Connection) -> None:
        """Session setup of every pooled connection: schema, UTC, staging tables."""
        await conn.execute(
            sql.SQL("SET search_path TO {}, pg_temp").format(sql.Identifier(self.schema))
        )
        await conn.execute("SET TIME ZONE 'UTC'")
        # JIT compilation costs far more than it saves on these short queries (the planner
        # overestimates the per-minute index ranges of a downsample by orders of magnitude).
        await conn.execute("SET jit = off")
        for stmt in STAGING_DDL:
            await conn.execute(stmt)

    @staticmethod
    async def _copy_out(conn: Connection, query: str, params: dict[str, Any]) -> bytes:
        """The whole output of a ``COPY … TO STDOUT`` (parameters bound client-side)."""
        chunks: list[bytes] = []
        async with conn.cursor() as cur, cur.copy(query, params) as copy:
            async for chunk in copy:
                chunks.append(bytes(chunk))
        return b"".join(chunks)

    async def _lock(self, conn: Connection, kind: int) -> None:
        """Take a transaction-level advisory lock of ``kind`` for this schema."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (kind, self.schema))

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool, create or migrate the schema, load the catalog."""
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=self.pool_min,
            max_size=self.pool_max,
            kwargs={"autocommit": True, "application_name": "shopfloor-historian"},
            configure=self._configure,
            open=False,
            name=f"historian-{self.schema}",
            timeout=self.connect_timeout,
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.Error as exc:  # PoolTimeout is one too
            await pool.close()
            raise HistorianError(f"cannot connect to {self.display}: {exc}") from exc
        self._pool = pool
        try:
            async with self._connection("migrating the schema") as conn:
                self.partitioning = await self._migrate(conn)
                await self._load_catalog(conn)
                if self.partitioning == "native":
                    self._partitions = await self._partition_days(conn)
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def _migrate(self, conn: Connection) -> str:
        """Apply the missing migrations; return how ``samples`` is partitioned.

        The advisory lock is taken *before* the migrating transaction starts: a transaction
        begun earlier could still see a catalog without another process's new schema.
        """
        lock = (_LOCK_MIGRATE, self.schema)
        await conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", lock)
        try:
            return await self._migrate_locked(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)

    async def _migrate_locked(self, conn: Connection) -> str:
        async with conn.transaction():
            # no DDL at all when the schema is there (a user without CREATE can open it)
            cur = await conn.execute(
                "SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                (
                    sql.Identifier(self.schema).as_string(conn),
                    sql.Identifier(self.schema, "schema_version").as_string(conn),
                ),
            )
            row = await cur.fetchone()
            has_schema, has_versions = (bool(row[0]), bool(row[1])) if row else (False, False)
            if not has_schema:
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            if not has_versions:
                await conn.execute(
                    "CREATE TABLE schema_version (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            cur = await conn.execute("SELECT max(version) FROM schema_version")
            row = await cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise HistorianError(
                    f"schema {self.schema} has historian schema version {current}; this "
                    f"shopfloor reads up to {SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await MIGRATIONS[version](conn, self.timescale)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            cur = await conn.execute(
                "SELECT value FROM historian_settings WHERE key = 'partitioning'"
            )
            row = await cur.fetchone()
        partitioning = str(row[0]) if row else "native"
        if self.timescale == "on" and partitioning != "timescaledb":
            raise HistorianError(
                f"timescale=on but schema {self.schema} was created with native partitions"
            )
        return partitioning

    async def close(self) -> None:
        """Close every pooled connection; the historian can be opened again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- catalog ----------------------------------------------------------------------

    async def _load_catalog(self, conn: Connection) -> None:
        cur = await conn.execute("SELECT signal_id, path, data_type FROM signals")
        rows = await cur.fetchall()
        self._by_id = {int(sid): (str(p), str(t)) for sid, p, t in rows}
        self._by_path = {p: sid for sid, (p, _) in self._by_id.items()}

    async def _reload_catalog(self) -> None:
        async with self._connection("loading the signal catalog") as conn:
            await self._load_catalog(conn)

    async def register_signals(self, signals: Sequence[SignalInfo]) -> dict[str, int]:
        """Add signals to the catalog (idempotent); return ``path -> signal_id``.

        One query finds the known ones, one ``INSERT … SELECT FROM unnest(…)`` adds the rest.
        """
        for s in signals:
            if s.data_type not in _DATA_TYPES:
                raise HistorianError(f"signal {s.path}: unknown data type {s.data_type!r}")
        wanted = {s.path: s for s in signals}
        paths = list(wanted)
        if not paths:
            return {}

        async def existing(conn: Connection) -> dict[str, tuple[int, str]]:
            cur = await conn.execute(
                "SELECT path, signal_id, data_type FROM signals WHERE path = ANY(%s)", (paths,)
            )
            return {str(p): (int(i), str(t)) for p, i, t in await cur.fetchall()}

        def check(found: dict[str, tuple[int, str]]) -> None:
            clashes = [
                f"{p} is {t}, not {wanted[p].data_type}"
                for p, (_, t) in found.items()
                if t != wanted[p].data_type
            ]
            if clashes:
                raise HistorianError(
                    "signal(s) registered with another data type: " + "; ".join(clashes)
                )

        async with self._connection("registering signals") as conn, conn.transaction():
            found = await existing(conn)
            check(found)
            new = [wanted[p] for p in paths if p not in found]
            if new:
                await conn.execute(
                    "INSERT INTO signals (path, data_type, unit, kind) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                    "ON CONFLICT (path) DO NOTHING",
                    (
                        [s.path for s in new],
                        [s.data_type for s in new],
                        [s.unit for s in new],
                        [s.kind for s in new],
                    ),
                )
                found = await existing(conn)
                check(found)  # another process may have registered one with another type
        # committed: what this call saw joins the cached catalog (a full reload per call
        # made registering N signals in small calls quadratic; ids unknown to the cache
        # reload it anyway)
        for path, (sid, data_type) in found.items():
            self._by_id[sid] = (path, data_type)
            self._by_path[path] = sid
        return {p: found[p][0] for p in paths}

    async def signals(self) -> pa.Table:
        """The catalog: ``signal_id, path, data_type, unit, kind``, ordered by id."""
        async with self._connection("reading the catalog") as conn:
            cur = await conn.execute(
                "SELECT signal_id, path, data_type, unit, kind FROM signals ORDER BY signal_id"
            )
            rows = await cur.fetchall()
        schema = pa.schema(
            [
                ("signal_id", pa.int32()),
                ("path", pa.string()),
                ("data_type", pa.string()),
                ("unit", pa.string()),
                ("kind", pa.string()),
            ]
        )
        return _rows_to_table(rows, schema)

    async def _resolve(self, signal: str | int) -> tuple[int, str, str]:
        """``(signal_id, path, data_type)`` of a signal by path or id (reloads on a miss)."""
        for attempt in (0, 1):
            if isinstance(signal, str):
                sid = self._by_path.get(signal)
            else:
                sid = int(signal) if int(signal) in self._by_id else None
            if sid is not None:
                path, data_type = self._by_id[sid]
                return sid, path, data_type
            if attempt == 0:
                await self._reload_catalog()  # another process may have registered it
        if isinstance(signal, str):
            raise UnknownSignalError(f"unknown signal {signal!r}")
        raise UnknownSignalError(f"unknown signal id {int(signal)}")

    async def _numeric(self, signal: str | int, what: str) -> tuple[int, str, str]:
        sid, path, data_type = await self._resolve(signal)
        if data_type not in DOWNSAMPLE_VALUE:
            raise HistorianError(f"{what} {path}: it is a {data_type} signal")
        return sid, path, data_type

    # -- samples ----------------------------------------------------------------------

    async def _validate(self, table: pa.Table) -> None:
        """Known signal ids, values in their type's column, data PostgreSQL can store."""
        sid = table.column("signal_id")
        ids = [int(i) for i in pc.unique(sid).to_pylist()]
        if any(i not in self._by_id for i in ids):
            await self._reload_catalog()
        unknown = sorted(i for i in ids if i not in self._by_id)
        if unknown:
            shown = ", ".join(str(i) for i in unknown[:20])
            raise HistorianError(f"batch has {len(unknown)} unknown signal id(s): {shown}")
        problems: list[str] = []
        for column in ("v_float", "v_int", "v_bool", "v_str"):
            values = table.column(column)
            if values.null_count == len(values):
                continue
            with_values = pc.unique(pc.filter(sid, pc.is_valid(values))).to_pylist()
            for i in sorted(int(x) for x in with_values):
                path, data_type = self._by_id[i]
                if _VALUE_COLUMN[data_type] != column:
                    problems.append(
                        f"{path} (id {i}) is {data_type} but the batch has values in {column}"
                    )
        if problems:
            raise HistorianError("type mismatch: " + "; ".join(problems))
        v_str = table.column("v_str")
        if v_str.null_count < len(v_str):
            nul = pc.fill_null(pc.match_substring(v_str, "\x00"), False)
            if pc.any(nul).as_py():
                bad = pc.unique(pc.filter(sid, nul)).to_pylist()
                names = ", ".join(self._by_id[int(i)][0] for i in sorted(bad)[:20])
                raise HistorianError(
                    f"PostgreSQL text cannot hold NUL characters (signal(s) {names})"
                )
        if self.partitioning == "native":
            bounds = pc.min_max(table.column("ts").cast(pa.int64()))
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if lo // DAY < _MIN_DAY or hi // DAY > _MAX_DAY:
                raise HistorianError(
                    "timestamps must lie in the years 1 to 9999 (samples are partitioned by day)"
                )

    @staticmethod
    async def _partition_days(conn: Connection) -> set[int]:
        """Days (since the epoch) that have a ``samples`` partition, from the catalog."""
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'samples'::regclass"
        )
        days: set[int] = set()
        for (name,) in await cur.fetchall():
            m = _PARTITION_NAME.match(str(name))
            if m:
                d = datetime.strptime(m.group(1), "%Y%m%d").date()  # noqa: DTZ007 - a date
                days.add((d - _DATE_ORIGIN).days)
        return days

    async def _ensure_partitions(self, days: np.ndarray) -> None:
        """Create the day partitions of ``days`` that do not exist yet."""
        if all(int(d) in self._partitions for d in days):
            return
        async with self._partition_lock:
            missing = [int(d) for d in days if int(d) not in self._partitions]
            for lo in range(0, len(missing), _PARTITIONS_PER_TX):
                async with self._connection("creating partitions") as conn, conn.transaction():
                    await self._lock(conn, _LOCK_PARTITIONS)
                    have = await self._partition_days(conn)
                    for day in missing[lo : lo + _PARTITIONS_PER_TX]:
                        if day in have:
                            continue
                        await conn.execute(
                            sql.SQL(
                                "CREATE TABLE {} PARTITION OF samples FOR VALUES FROM ({}) TO ({})"
                            ).format(
                                sql.Identifier(self.schema, _partition_name(day)),
                                sql.Literal(day * DAY),
                                sql.Literal((day + 1) * DAY),
                            )
                        )
                        have.add(day)
                self._partitions = have

    async def append(self, batch: ReadingBatch) -> int:
        """Store a batch, merge its rollups and latest values in one transaction."""
        table = batch.table
        n = int(table.num_rows)
        if n == 0:
            return 0
        if self._pool is None:
            raise HistorianError(f"historian {self.display} is not open")
        await self._validate(table)
        prepared = await asyncio.to_thread(prepare_batch, table)
        for attempt in (0, 1):
            if self.partitioning == "native":
                await self._ensure_partitions(prepared.days)
            try:
                await self._write(prepared)
            except HistorianError as exc:
                # A retention run elsewhere dropped a partition this process had listed.
                if attempt or not isinstance(exc.__cause__, psycopg.errors.CheckViolation):
                    raise
                async with self._connection("listing partitions") as conn:
                    self._partitions = await self._partition_days(conn)
            else:
                break
        return n

    async def append_once(
        self,
        batch_ids: Sequence[str],
        batch: ReadingBatch,
        dead_letters: pa.Table | None = None,
    ) -> bool:
        """Store readings, dead letters and ``batch_ids`` in one transaction, or nothing.

        The ids go into ``ingested_batches`` first (``ON CONFLICT DO NOTHING``); when one
        was there already the transaction is rolled back. A concurrent transaction holding
        one of the ids makes this one wait for its outcome (the primary key's lock).
        """
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            raise HistorianError("append_once needs at least one batch id")
        if self._pool is None:
            raise HistorianError(f"historian {self.display} is not open")
        table = batch.table
        n = int(table.num_rows)
        prepared: PreparedBatch | None = None
        if n:
            await self._validate(table)
            prepared = await asyncio.to_thread(prepare_batch, table)
        letters: bytes | None = None
        if dead_letters is not None and dead_letters.num_rows:
            rows = _conform(dead_letters, DEAD_LETTER_SCHEMA, "dead letters")
            columns = [CopyColumn(t, rows.column(i)) for i, t in enumerate(_DEAD_LETTER_TYPES)]
            letters = await asyncio.to_thread(encode_binary, columns)
        for attempt in (0, 1):
            if prepared is not None and self.partitioning == "native":
                await self._ensure_partitions(prepared.days)
            try:
                await self._write(prepared, ids, n, letters)
            except _AlreadyStoredError:
                return False
            except HistorianError as exc:
                if attempt or not isinstance(exc.__cause__, psycopg.errors.CheckViolation):
                    raise
                async with self._connection("listing partitions") as conn:
                    self._partitions = await self._partition_days(conn)
            else:
                break
        return True

    async def stored_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Which of ``batch_ids`` :meth:`append_once` has stored."""
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return set()
        async with self._connection("stored_batches") as conn:
            cur = await conn.execute(
                "SELECT batch_id FROM ingested_batches WHERE batch_id = ANY(%s)", (ids,)
            )
            return {str(i) for (i,) in await cur.fetchall()}

    async def _write(
        self,
        prepared: PreparedBatch | None,
        batch_ids: Sequence[str] = (),
        rows: int = 0,
        dead_letters: bytes | None = None,
    ) -> None:
        async with (
            self._connection("append") as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            if batch_ids:
                await cur.execute(
                    "INSERT INTO ingested_batches (batch_id, rows) "
                    "SELECT unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                    (list(batch_ids), rows),
                )
                if cur.rowcount != len(batch_ids):
                    raise _AlreadyStoredError  # rolls the transaction back
            if dead_letters is not None:
                async with cur.copy(_COPY_DEAD_LETTERS) as copy:
                    await copy.write(dead_letters)
            if prepared is None:
                return
            async with cur.copy(_COPY_SAMPLES) as copy:
                await copy.write(prepared.samples)
            for granularity, data in prepared.rollups.items():
                async with cur.copy(_COPY_STAGES[granularity]) as copy:
                    await copy.write(data)
                await cur.execute(_MERGES[granularity])
            async with cur.copy(_COPY_LATEST_STAGE) as copy:
                await copy.write(prepared.latest)
            await cur.execute(_MERGE_LATEST)

    async def read_raw(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        *,
        limit: int | None = None,
    ) -> pa.Table:
        """Samples of one signal with ``start <= ts < end`` in time order."""
        sid, _, data_type = await self._resolve(signal)
        column = _VALUE_COLUMN[data_type]
        params: dict[str, Any] = {"sid": sid, "s": to_us(start), "e": to_us(end)}
        rows = "FROM samples WHERE signal_id = %(sid)s AND ts >= %(s)s::int8 AND ts < %(e)s::int8"
        rows += " ORDER BY ts"
        if limit is not None:
            rows += " LIMIT %(limit)s"
            params["limit"] = max(0, int(limit))
        if column == "v_str":
            return await self._read_raw_text(rows, params)
        value_type, zero = _RAW_VALUE[column]
        query = (
            f"COPY (SELECT ts, quality, {column} IS NOT NULL, coalesce({column}, {zero}) "
            f"{rows}) TO STDOUT (FORMAT BINARY)"
        )
        async with self._connection("read_raw") as conn:
            data = await self._copy_out(conn, query, params)
        ts, quality, valid, values = decode_fixed(data, ["int8", "int2", "bool", value_type])
        return pa.table(
            {
                "ts": _as_ts(ts),
                "quality": pa.array(quality.astype(np.uint8)),
                "value": pa.array(values, _VALUE_TYPE[data_type], mask=~valid),
            }
        )

    async def _read_raw_text(self, rows: str, params: dict[str, Any]) -> pa.Table:
        """String samples: fixed-width records and the concatenated text as two ``bytea``."""
        query = (
            "SELECT string_agg(int8send(ts) || int2send(quality) || "
            "int4send(coalesce(octet_length(v_str), -1)), ''::bytea ORDER BY rn), "
            "string_agg(convert_to(v_str, 'UTF8'), ''::bytea ORDER BY rn) "
            "FROM (SELECT ts, quality, v_str, row_number() OVER (ORDER BY ts) AS rn "
            f"FROM (SELECT ts, quality, v_str {rows}) r) x"
        )
        async with self._connection("read_raw") as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        records = bytes(row[0]) if row and row[0] is not None else b""
        text = bytes(row[1]) if row and row[1] is not None else b""
        rec = np.frombuffer(records, dtype=np.dtype([("ts", ">i8"), ("q", ">i2"), ("n", ">i4")]))
        lengths = rec["n"].astype(np.int64)
        valid = lengths >= 0
        offsets = np.zeros(len(rec) + 1, dtype=np.int64)
        np.cumsum(np.where(valid, lengths, 0), out=offsets[1:])
        if offsets[-1] != len(text):
            raise HistorianError("read_raw: string lengths do not add up (corrupt result)")
        bitmap = None if valid.all() else pa.array(valid).buffers()[1]
        values = pa.Array.from_buffers(
            pa.large_string(),
            len(rec),
            [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(text)],
        )
        return pa.table(
            {
                "ts": _as_ts(rec["ts"].astype(np.int64)),
                "quality": pa.array(rec["q"].astype(np.uint8)),
                "value": values.cast(pa.string()),
            }
        )

    async def downsample(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        bucket: timedelta,
    ) -> pa.Table:
        """Aggregate a numeric signal into epoch-aligned buckets (rollups + partial minutes).

        Hours wholly inside one bucket and inside ``[start, end)`` come from ``rollup_1h``
        (widths of an hour or more), the other minutes wholly inside one bucket from
        ``rollup_1m``, and the raw rows of the partial minutes at the range edges and of the
        minutes that hold a bucket boundary are read by index range. Buckets narrower than
        two minutes are computed from raw rows.
        """
        return await self._downsample(signal, start, end, bucket, use_rollups=True)

    async def downsample_raw(
        self, signal: str | int, start: datetime, end: datetime, bucket: timedelta
    ) -> pa.Table:
        """:meth:`downsample` computed from raw samples only (reference and benchmark)."""
        return await self._downsample(signal, start, end, bucket, use_rollups=False)

    async def _downsample(
        self,
        signal: str | int,
        start: datetime,
        end: datetime,
        bucket: timedelta,
        *,
        use_rollups: bool,
    ) -> pa.Table:
        sid, _, data_type = await self._numeric(signal, "cannot downsample")
        b = bucket // timedelta(microseconds=1)
        if b <= 0:
            raise HistorianError(f"bucket width must be positive, got {bucket}")
        s, e = to_us(start), to_us(end)
        out_type = pa.int64() if data_type == "int" else pa.float64()
        if e <= s:
            return _empty_downsample(out_type)
        o = _floor(s, b)
        params: dict[str, Any] = {"sid": sid, "s": s, "e": e, "b": b, "o": o}
        s_full, e_full = _ceil(s, MINUTE), _floor(e, MINUTE)
        aligned = b % MINUTE == 0
        # Bucket boundaries strictly inside (s_full, e_full): o + k * b for k_lo <= k <= k_hi.
        k_lo, k_hi = (s_full - o) // b + 1, (e_full - o - 1) // b
        use_rollups = (
            use_rollups
            and b >= 2 * MINUTE
            and s_full < e_full
            and (aligned or k_hi - k_lo < _MAX_STRADDLES)
        )
        if use_rollups:
            h_s, h_e = _ceil(s, HOUR), _floor(e, HOUR)
            hours = b >= HOUR and h_s < h_e
            kh_lo, kh_hi = (h_s - o) // b + 1, (h_e - o - 1) // b
            params |= {"s_full": s_full, "e_full": e_full, "k_lo": k_lo, "k_hi": k_hi}
            params |= {"h_s": h_s, "h_e": h_e, "kh_lo": kh_lo, "kh_hi": kh_hi}
            query = rollup_downsample_sql(
                data_type,
                minute_straddles=not aligned and k_lo <= k_hi,
                hours=hours,
                hour_straddles=hours and b % HOUR != 0 and kh_lo <= kh_hi,
            )
        else:
            query = raw_downsample_sql(data_type)
        async with self._connection("downsample") as conn:
            data = await self._copy_out(conn, query, params)
        value: PgType = "float8" if data_type == "float" else "int8"
        cols = decode_fixed(data, ["int8", value, value, value, value, "float8", "int8"])
        bucket_col, first, last, mn, mx, avg, count = cols
        return pa.table(
            {
                "bucket": _as_ts(bucket_col),
                "first": pa.array(first).cast(out_type),
                "last": pa.array(last).cast(out_type),
                "min": pa.array(mn).cast(out_type),
                "max": pa.array(mx).cast(out_type),
                "avg": pa.array(avg, pa.float64()),
                "count": pa.array(count, pa.int64()),
            }
        )

    async def rollups(
        self,
        signal: str | int,
        granularity: Granularity,
        start: datetime,
        end: datetime,
    ) -> pa.Table:
        """The stored per-minute or per-hour rollups of a numeric signal, read directly.

        Buckets whose start lies in ``[start, end)``, in order, with
        :data:`~shopfloor.historian.base.ROLLUP_COLUMNS`.
        """
        sid, _, data_type = await self._numeric(signal, "no rollups for")
        rollup = ROLLUPS.get(granularity)
        if rollup is None:
            raise HistorianError(
                f"unknown rollup granularity {granularity!r}; use one of {sorted(ROLLUPS)}"
            )
        params = {"sid": sid, "s": to_us(start), "e": to_us(end)}
        async with self._connection("rollups") as conn:
            data = await self._copy_out(conn, read_rollups_sql(rollup, data_type), params)
        value: PgType = "float8" if data_type == "float" else "int8"
        types: list[PgType] = ["int8", "int8", value, "int8", value, value, value]
        cols = decode_fixed(data, [*types, "float8", "int8"])
        out_type = pa.int64() if data_type == "int" else pa.float64()
        arrays = [
            _as_ts(cols[0]),
            _as_ts(cols[1]),
            pa.array(cols[2]).cast(out_type),
            _as_ts(cols[3]),
            *(pa.array(c).cast(out_type) for c in cols[4:7]),
            pa.array(cols[7], pa.float64()),
            pa.array(cols[8], pa.int64()),
        ]
        return pa.table(dict(zip(ROLLUP_COLUMNS, arrays, strict=True)))

    async def latest(self, signals: Sequence[str | int] | None = None) -> pa.Table:
        """The newest sample of each signal (all signals with samples when ``None``)."""
        ids = None if signals is None else [(await self._resolve(s))[0] for s in signals]
        query = (
            "SELECT l.signal_id, s.path, l.ts, l.quality, l.v_float, l.v_int, l.v_bool, "
            "l.v_str FROM latest l JOIN signals s USING (signal_id)"
        )
        params: tuple[Any, ...] = ()
        if ids is not None:
            query += " WHERE l.signal_id = ANY(%s)"
            params = (ids,)
        query += " ORDER BY l.signal_id"
        async with self._connection("latest") as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        schema = pa.schema(
            [
                ("signal_id", pa.int32()),
                ("path", pa.string()),
                ("ts", pa.int64()),
                ("quality", pa.uint8()),
                ("v_float", pa.float64()),
                ("v_int", pa.int64()),
                ("v_bool", pa.bool_()),
                ("v_str", pa.string()),
            ]
        )
        table = _rows_to_table(rows, schema)
        return table.set_column(2, "ts", table.column("ts").cast(TS_TYPE))

    # -- events and dead letters ------------------------------------------------------

    async def append_events(self, events: pa.Table) -> int:
        """Store events; an existing ``event_id`` is replaced (the last one in a batch wins)."""
        table = _conform(events, EVENT_SCHEMA, "events")
        n = int(table.num_rows)
        if n == 0:
            return 0
        columns = [CopyColumn(t, table.column(i)) for i, t in enumerate(_EVENT_TYPES)]
        columns.append(CopyColumn("int8", pa.array(np.arange(n, dtype=np.int64))))
        data = await asyncio.to_thread(encode_binary, columns)
        async with (
            self._connection("append_events") as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            async with cur.copy(_COPY_EVENT_STAGE) as copy:
                await copy.write(data)
            await cur.execute(_MERGE_EVENTS)
        return n

    async def read_events(
        self,
        start: datetime,
        end: datetime,
        *,
        asset_prefix: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Events overlapping ``[start, end)``, oldest first.

        An event overlaps when it starts before ``end`` and is open, ends after ``start``,
        or starts inside the range. ``asset_prefix`` matches whole path segments.
        """
        query = (
            "SELECT event_id, kind, asset, signal, ts, end_ts, code, severity, message, data "
            "FROM events WHERE ts < %(end)s "
            "AND (ts >= %(start)s OR end_ts IS NULL OR end_ts > %(start)s)"
        )
        params: dict[str, Any] = {"start": start, "end": end}
        if asset_prefix is not None:
            prefix = asset_prefix.rstrip("/")
            query += " AND (asset = %(prefix)s OR starts_with(asset, %(prefix_slash)s))"
            params["prefix"] = prefix
            params["prefix_slash"] = prefix + "/"
        if kinds is not None:
            query += " AND kind = ANY(%(kinds)s)"
            params["kinds"] = list(kinds)
        query += " ORDER BY ts, event_id"
        if limit is not None:
            query += " LIMIT %(limit)s"
            params["limit"] = max(0, int(limit))
        async with self._connection("read_events") as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return _rows_to_table(rows, EVENT_SCHEMA)

    async def append_dead_letters(self, letters: pa.Table) -> int:
        """Store dead letters (:data:`DEAD_LETTER_SCHEMA`)."""
        table = _conform(letters, DEAD_LETTER_SCHEMA, "dead letters")
        n = int(table.num_rows)
        if n == 0:
            return 0
        columns = [CopyColumn(t, table.column(i)) for i, t in enumerate(_DEAD_LETTER_TYPES)]
        data = await asyncio.to_thread(encode_binary, columns)
        async with (
            self._connection("append_dead_letters") as conn,
            conn.cursor() as cur,
            cur.copy(_COPY_DEAD_LETTERS) as copy,
        ):
            await copy.write(data)
        return n

    async def read_dead_letters(
        self, since: datetime | None = None, *, limit: int | None = None
    ) -> pa.Table:
        """Dead letters received at or after ``since``, newest first."""
        query = "SELECT received_at, source, location, reason, payload FROM dead_letters"
        params: dict[str, Any] = {}
        if since is not None:
            query += " WHERE received_at >= %(since)s"
            params["since"] = since
        query += " ORDER BY received_at DESC"
        if limit is not None:
            query += " LIMIT %(limit)s"
            params["limit"] = max(0, int(limit))
        async with self._connection("read_dead_letters") as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return _rows_to_table(rows, DEAD_LETTER_SCHEMA)

    # -- retention --------------------------------------------------------------------

    async def apply_retention(self, older_than: datetime) -> RetentionResult:
        """Delete data older than ``older_than``.

        Samples and minute rollups are cut at the minute that contains ``older_than``
        (floor): whole day partitions (TimescaleDB: chunks) that end at or before the cut
        are dropped, the samples of the partial day before it are deleted. Hour rollups
        before the cut are deleted and the hour holding the cut is rebuilt from its
        remaining minutes, so every remaining rollup summarises exactly the remaining
        samples. Events are deleted when they ended before ``older_than``, dead letters
        when received before it. ``rollups_deleted`` counts the rows removed from both
        rollup tables (a rebuilt hour is not counted).
        """
        cut = _floor(to_us(older_than), MINUTE)
        hour = _floor(cut, HOUR)

        async def delete(conn: Connection, query: str, param: Any) -> int:
            cur = await conn.execute(query, (param,))
            return max(0, cur.rowcount)

        async def count(conn: Connection, query: sql.Composed | str, *params: Any) -> int:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        dropped: list[int] = []
        async with self._connection("apply_retention") as conn, conn.transaction():
            samples = 0
            if self.partitioning == "native":
                await self._lock(conn, _LOCK_PARTITIONS)
                for day in sorted(await self._partition_days(conn)):
                    if (day + 1) * DAY > cut:
                        continue
                    name = sql.Identifier(self.schema, _partition_name(day))
                    samples += await count(conn, sql.SQL("SELECT count(*) FROM {}").format(name))
                    await conn.execute(sql.SQL("DROP TABLE {}").format(name))
                    dropped.append(day)
            else:
                day_cut = _floor(cut, DAY)
                samples += await count(conn, "SELECT count(*) FROM samples WHERE ts < %s", day_cut)
                await conn.execute(
                    "SELECT drop_chunks('samples', older_than => %s::bigint)", (day_cut,)
                )
            samples += await delete(conn, "DELETE FROM samples WHERE ts < %s", cut)
            rollups = await delete(conn, "DELETE FROM rollup_1m WHERE minute < %s", cut)
            rollups += await delete(conn, "DELETE FROM rollup_1h WHERE hour < %s", cut)
            if hour < cut:  # the minutes left of the cut hour make it up again
                cur = await conn.execute(
                    rebuild_hours_sql("minute >= %s AND minute < %s"), (hour, hour + HOUR)
                )
                rollups -= max(0, cur.rowcount)
            await delete(conn, "DELETE FROM latest WHERE ts < %s", cut)
            events = await delete(
                conn, "DELETE FROM events WHERE end_ts IS NOT NULL AND end_ts < %s", older_than
            )
            letters = await delete(
                conn, "DELETE FROM dead_letters WHERE received_at < %s", older_than
            )
            await delete(conn, "DELETE FROM ingested_batches WHERE ingested_at < %s", older_than)
        self._partitions -= set(dropped)
        return RetentionResult(samples, rollups, events, letters)

    # -- PostgreSQL specifics ---------------------------------------------------------

    async def analyze(self) -> None:
        """``ANALYZE`` the sample and rollup tables (after bulk loads, for the planner)."""
        async with self._connection("analyze") as conn:
            await conn.execute("ANALYZE signals, samples, rollup_1m, rollup_1h, latest")

    async def partitions(self) -> list[date]:
        """The UTC days that have a ``samples`` partition (native partitioning), in order."""
        async with self._connection("listing partitions") as conn:
            days = await self._partition_days(conn)
        return [_DATE_ORIGIN + timedelta(days=d) for d in sorted(days)]

    async def schema_versions(self) -> list[int]:
        """The migrations recorded in ``schema_version``, in order."""
        async with self._connection("reading schema_version") as conn:
            cur = await conn.execute("SELECT version FROM schema_version ORDER BY version")
            return [int(v) for (v,) in await cur.fetchall()]
