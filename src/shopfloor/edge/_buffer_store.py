"""The SQLite side of :mod:`shopfloor.edge.buffer`: every function here runs on the buffer's
one thread, never on the event loop. The file layout:

* ``meta`` — ``format`` (``shopfloor-edge-buffer``), ``version``, ``buffer_id``, ``created``;
* ``queue`` — the waiting payloads, ``seq`` an ``AUTOINCREMENT`` key (never reused);
* ``dropped`` — one row per episode of lost payloads.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from shopfloor.errors import BufferClosedError, BufferFullError, EdgeBufferError

__all__ = ["BufferItem", "DropRecord", "OverflowPolicy", "Store", "now_us"]

log = logging.getLogger("shopfloor.edge.buffer")  # one logger for the whole buffer

BufferItem = tuple[int, str, bytes]
"""One waiting payload as :meth:`EdgeBuffer.peek` returns it: ``(seq, key, payload)``."""

OverflowPolicy = Literal["drop_oldest", "block", "reject"]
"""What :meth:`EdgeBuffer.put` does when the buffer is full (see the module docstring)."""

_FORMAT: Final = "shopfloor-edge-buffer"
_VERSION: Final = 1
_PAGE_SIZE: Final = 16384  # large payloads: 4x fewer overflow pages than SQLite's 4096
_WAL_LIMIT: Final = 64 << 20  # the WAL is truncated to this after a checkpoint
_LOG_EVERY_S: Final = 60.0  # while an episode of drops lasts, one summary line a minute
POLICIES: Final = ("drop_oldest", "block", "reject")
SYNC: Final = {"normal": "NORMAL", "full": "FULL"}

_SCHEMA: Final = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused, even when empty
    key TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    enqueued_us INTEGER NOT NULL,           -- wall clock, UTC microseconds
    payload BLOB NOT NULL                   -- last: scans of the other columns skip it
);
CREATE TABLE dropped (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER,                      -- NULL when refused before it got a seq
    last_seq INTEGER,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    reason TEXT NOT NULL,                   -- overflow | rejected | too_large
    first_at_us INTEGER NOT NULL,
    last_at_us INTEGER NOT NULL
);
"""


def now_us() -> int:
    return time.time_ns() // 1000


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


@dataclass(frozen=True, slots=True)
class DropRecord:
    """One episode of lost payloads, as kept in the buffer's ``dropped`` table."""

    first_seq: int | None
    """First seq dropped (``None`` for payloads refused before they had one)."""
    last_seq: int | None
    count: int
    bytes: int
    reason: str
    """``overflow`` (dropped oldest), ``rejected`` (full, policy ``reject``) or ``too_large``."""
    first_at: datetime
    last_at: datetime


@dataclass(slots=True)
class _Episode:
    """The open drop record that the next loss of the same kind extends."""

    row_id: int
    reason: str
    last_seq: int | None
    count: int
    nbytes: int
    first_at_us: int
    logged_at: float


class Store:
    """The synchronous SQLite side; every method runs on the buffer's one thread."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        overflow: OverflowPolicy,
        synchronous: str,
        lock_timeout: float,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.synchronous = synchronous
        self.lock_timeout = lock_timeout
        self.conn: sqlite3.Connection | None = None
        self.buffer_id = ""
        self.pending_count = 0
        self.pending_bytes = 0
        self.oldest_us: int | None = None
        self.last_seq = 0
        self.dropped_count = 0
        self.dropped_bytes = 0
        self.episode: _Episode | None = None

    # -- errors -----------------------------------------------------------------------

    def _error(self, what: str, exc: sqlite3.Error) -> EdgeBufferError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return EdgeBufferError(
                f"edge buffer {self.path} is locked by another process (is another edge "
                f"using the same file?); waited {self.lock_timeout:g} s to {what}: {text}"
            )
        if isinstance(exc, sqlite3.OperationalError) and "full" in text:
            return EdgeBufferError(f"edge buffer {self.path}: the disk is full ({what}): {text}")
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return EdgeBufferError(
                f"edge buffer {self.path} is corrupt or not an SQLite file ({what}: {text}); "
                "move it aside (with its -wal file) to keep it for inspection; a new, empty "
                "buffer is then created at the next start"
            )
        return EdgeBufferError(f"edge buffer {self.path}: cannot {what}: {text}")

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise BufferClosedError(f"edge buffer {self.path} is closed")
        return self.conn

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeBufferError(
                f"edge buffer {self.path}: cannot create its folder: {exc}"
            ) from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.lock_timeout,
                isolation_level=None,  # explicit BEGIN IMMEDIATE … COMMIT
                check_same_thread=False,  # one thread uses it, but not the one that made it
            )
        except sqlite3.Error as exc:
            raise self._error("open it", exc) from exc
        try:
            self._setup(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open it", exc) from exc
            raise
        self.conn = conn
        self._check_disk()

    def _check_disk(self) -> None:
        """Warn when the disk cannot hold a full buffer: SQLite would fail before the bound."""
        try:
            free = shutil.disk_usage(self.path.parent).free
            held = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        except OSError:
            return
        room = free + held - _WAL_LIMIT
        if room < self.max_bytes * 1.1:  # pages and free lists: about 10 % over the payloads
            log.warning(
                "edge buffer %s: the disk has room for about %d MB, less than the bound "
                "max_bytes = %d MB; when it fills up puts fail instead of the overflow policy "
                "applying: lower max_bytes",
                self.path,
                room // 1_000_000,
                self.max_bytes // 1_000_000,
            )

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")  # only takes effect on a new file
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # one owner; no shared-memory index
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise EdgeBufferError(f"edge buffer {self.path}: cannot use WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {SYNC[self.synchronous]}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
        conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at the first put
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not tables:
                for statement in _SCHEMA.split(";"):  # not executescript: it would commit
                    if statement.strip():
                        conn.execute(statement)
                self.buffer_id = uuid.uuid4().hex
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [
                        ("format", _FORMAT),
                        ("version", str(_VERSION)),
                        ("buffer_id", self.buffer_id),
                        ("created", _utc(now_us()).isoformat()),
                    ],
                )
            else:
                self._check_format(conn, tables)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        count, nbytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM queue"
        ).fetchone()
        self.pending_count, self.pending_bytes = int(count), int(nbytes)
        self.oldest_us = self._head_time(conn)
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        self.last_seq = int(row[0]) if row else 0
        count, nbytes = conn.execute(
            "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0) FROM dropped"
        ).fetchone()
        self.dropped_count, self.dropped_bytes = int(count), int(nbytes)

    def _check_format(self, conn: sqlite3.Connection, tables: set[str]) -> None:
        meta = (
            dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if "meta" in tables
            else {}
        )
        if meta.get("format") != _FORMAT or not {"queue", "dropped"} <= tables:
            raise EdgeBufferError(
                f"{self.path} is an SQLite file but not a shopfloor edge buffer "
                f"(tables: {', '.join(sorted(tables))}); point the buffer at a new path"
            )
        if meta.get("version") != str(_VERSION):
            raise EdgeBufferError(
                f"edge buffer {self.path} has format version {meta.get('version')}, this "
                f"shopfloor reads version {_VERSION}"
            )
        self.buffer_id = meta.get("buffer_id", "")

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # the data is safe in the WAL; the next open replays it
                log.warning("edge buffer %s: checkpoint at close failed: %s", self.path, exc)
            conn.close()

    @staticmethod
    def _head_time(conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT enqueued_us FROM queue ORDER BY seq LIMIT 1").fetchone()
        return int(row[0]) if row else None

    # -- writes -----------------------------------------------------------------------

    def insert(self, rows: Sequence[tuple[bytes | bytearray, str]]) -> list[int] | None:
        """Store ``rows`` in one transaction; ``None`` when full and the policy is ``block``."""
        conn = self._db()
        total = sum(len(p) for p, _ in rows)
        now = now_us()
        if total > self.max_bytes:
            self._refuse("too_large", len(rows), total, now)
            raise BufferFullError(
                f"edge buffer {self.path}: {len(rows)} payload(s) of {total} bytes exceed the "
                f"whole buffer ({self.max_bytes} bytes); refused and recorded as dropped"
            )
        excess = self.pending_bytes + total - self.max_bytes
        if excess > 0 and self.overflow == "block":
            return None
        if excess > 0 and self.overflow == "reject":
            self._refuse("rejected", len(rows), total, now)
            raise BufferFullError(
                f"edge buffer {self.path} is full ({self.pending_bytes} of {self.max_bytes} "
                f"bytes waiting); {len(rows)} payload(s) of {total} bytes rejected and "
                "recorded as dropped"
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            drop = self._drop_oldest(conn, excess, now) if excess > 0 else None
            seqs: list[int] = []
            for payload, key in rows:
                cur = conn.execute(
                    "INSERT INTO queue (key, nbytes, enqueued_us, payload) VALUES (?, ?, ?, ?)",
                    (key, len(payload), now, payload),
                )
                seqs.append(int(cur.lastrowid or 0))
            oldest = self._head_time(conn) if drop is not None else self.oldest_us
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise self._error("store a payload", exc) from exc
            raise
        if drop is not None:
            self._dropped_committed(drop)
        else:
            self.episode = None  # a put that needed no drop ends an episode of drops
        self.pending_count += len(rows)
        self.pending_bytes += total
        self.last_seq = max(self.last_seq, *seqs) if seqs else self.last_seq
        self.oldest_us = oldest if oldest is not None else now
        return seqs

    def _drop_oldest(
        self, conn: sqlite3.Connection, excess: int, now: int
    ) -> tuple[_Episode, int, int, bool]:
        """Delete the oldest payloads to free ``excess`` bytes (in the open transaction)."""
        freed = count = 0
        first = last = 0
        for seq, nbytes in conn.execute("SELECT seq, nbytes FROM queue ORDER BY seq"):
            if count == 0:
                first = int(seq)
            last = int(seq)
            freed += int(nbytes)
            count += 1
            if freed >= excess:
                break
        conn.execute("DELETE FROM queue WHERE seq <= ?", (last,))
        episode, extended = self._write_drop(conn, "overflow", first, last, count, freed, now)
        return episode, count, freed, extended

    def _refuse(self, reason: str, count: int, nbytes: int, now: int) -> None:
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            drop = self._write_drop(conn, reason, None, None, count, nbytes, now)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise self._error("record a dropped payload", exc) from exc
            raise
        self._dropped_committed((drop[0], count, nbytes, drop[1]))

    def _write_drop(
        self,
        conn: sqlite3.Connection,
        reason: str,
        first: int | None,
        last: int | None,
        count: int,
        nbytes: int,
        now: int,
    ) -> tuple[_Episode, bool]:
        ep = self.episode
        contiguous = first is None or (ep is not None and ep.last_seq == first - 1)
        if ep is not None and ep.reason == reason and contiguous:
            conn.execute(
                "UPDATE dropped SET last_seq = COALESCE(?, last_seq), count = count + ?, "
                "bytes = bytes + ?, last_at_us = ? WHERE id = ?",
                (last, count, nbytes, now, ep.row_id),
            )
            new = _Episode(
                ep.row_id,
                reason,
                last if last is not None else ep.last_seq,
                ep.count + count,
                ep.nbytes + nbytes,
                ep.first_at_us,
                ep.logged_at,
            )
            return new, True
        cur = conn.execute(
            "INSERT INTO dropped (first_seq, last_seq, count, bytes, reason, first_at_us, "
            "last_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (first, last, count, nbytes, reason, now, now),
        )
        new = _Episode(int(cur.lastrowid or 0), reason, last, count, nbytes, now, 0.0)
        return new, False

    def _dropped_committed(self, drop: tuple[_Episode, int, int, bool]) -> None:
        episode, count, nbytes, extended = drop
        self.dropped_count += count
        self.dropped_bytes += nbytes
        if episode.reason == "overflow":
            self.pending_count -= count
            self.pending_bytes -= nbytes
        mono = time.monotonic()
        if not extended:
            log.warning(
                "edge buffer %s: %s — %d payload(s), %d bytes dropped (seq %s–%s; bound "
                "%d bytes); recorded in its 'dropped' table",
                self.path,
                _REASONS[episode.reason],
                count,
                nbytes,
                episode.last_seq - count + 1 if episode.last_seq is not None else "-",
                episode.last_seq if episode.last_seq is not None else "-",
                self.max_bytes,
            )
            episode.logged_at = mono
        elif mono - episode.logged_at >= _LOG_EVERY_S:
            log.warning(
                "edge buffer %s: still dropping (%s): %d payload(s), %d bytes since %s",
                self.path,
                episode.reason,
                episode.count,
                episode.nbytes,
                _utc(episode.first_at_us).isoformat(timespec="seconds"),
            )
            episode.logged_at = mono
        self.episode = episode

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self.episode = None  # the row it named may not exist: start a new one next time

    def ack(self, up_to_seq: int) -> int:
        conn = self._db()
        if up_to_seq > self.last_seq:
            raise ValueError(
                f"edge buffer {self.path}: ack({up_to_seq}) is beyond the last sequence "
                f"number given out ({self.last_seq})"
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            count, nbytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM queue WHERE seq <= ?",
                (up_to_seq,),
            ).fetchone()
            if count:
                conn.execute("DELETE FROM queue WHERE seq <= ?", (up_to_seq,))
            oldest = self._head_time(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise self._error("acknowledge", exc) from exc
            raise
        self.pending_count -= int(count)
        self.pending_bytes -= int(nbytes)
        self.oldest_us = oldest
        return int(count)

    # -- reads ------------------------------------------------------------------------

    def peek(self, n: int, max_bytes: int | None) -> list[BufferItem]:
        conn = self._db()
        try:
            if max_bytes is None:
                rows = conn.execute(
                    "SELECT seq, key, payload FROM queue ORDER BY seq LIMIT ?", (n,)
                ).fetchall()
                return [(int(s), str(k), bytes(p)) for s, k, p in rows]
            last = None
            total = 0
            for seq, nbytes in conn.execute(
                "SELECT seq, nbytes FROM queue ORDER BY seq LIMIT ?", (n,)
            ):
                if last is not None and total + int(nbytes) > max_bytes:
                    break
                total += int(nbytes)
                last = int(seq)
            if last is None:
                return []
            rows = conn.execute(
                "SELECT seq, key, payload FROM queue WHERE seq <= ? ORDER BY seq", (last,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc
        return [(int(s), str(k), bytes(p)) for s, k, p in rows]

    def dropped_records(self, limit: int) -> list[DropRecord]:
        conn = self._db()
        try:
            rows = conn.execute(
                "SELECT first_seq, last_seq, count, bytes, reason, first_at_us, last_at_us "
                "FROM dropped ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("read its dropped table", exc) from exc
        return [
            DropRecord(f, last, int(c), int(b), str(r), _utc(int(t0)), _utc(int(t1)))
            for f, last, c, b, r, t0, t1 in reversed(rows)
        ]


_REASONS: Final = {
    "overflow": "full, dropping the oldest payloads",
    "rejected": "full, rejecting new payloads",
    "too_large": "a payload larger than the whole buffer was refused",
}
