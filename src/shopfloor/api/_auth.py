"""API tokens, scopes, asset subtrees and the append-only audit log, in one SQLite file.

**Tokens** look like ``sf_<id>_<secret>``: ``id`` (12 hex digits) names the row, ``secret``
carries 256 random bits. Only the SHA-256 of the whole token is stored and it is compared
in constant time (:func:`hmac.compare_digest`). A slow password hash (argon2, bcrypt) would
add nothing here: it protects low-entropy secrets against guessing, and nobody guesses
256 random bits, while every request pays for the verification.

**Scopes** are ordered, each including the ones below it: ``read`` (every GET), ``operate``
(acknowledging alarms, downtime reasons, setpoint writes; includes read) and ``admin``
(reading the audit log; includes operate). Every token is limited to **subtrees** of the
asset tree, given as asset path prefixes matched on whole segments: ``acme/munich`` covers
``acme/munich`` and everything below it, but not ``acme/munich-2`` nor ``acme/leipzig``; the
enterprise path (``acme``) covers the whole factory.

**Audit log**: every request that presents a token (valid or not) and every token
administration (create, revoke) appends one row ``(seq, ts, token_id, method, path,
status, client, detail)``. Rows are never changed: SQLite triggers abort any ``UPDATE`` or
``DELETE`` of the table, and each row carries the SHA-256 of its predecessor's hash and its
own content, so :meth:`AuthStore.verify_audit` detects rows edited or removed behind the
triggers' back (e.g. by dropping them). The file is written with ``synchronous = FULL``:
a row that was written is on disk before the response it belongs to leaves.

**Shares** (data products offered to partner organisations, :mod:`._shares`) live in the
same file; tables added after the first release come as numbered migrations, applied in
order under ``PRAGMA user_version``.

SQLite rather than the historian's DuckDB: the ``shopfloor token`` commands must work
while a server holds the historian open (DuckDB locks its file per process), and SQLite's
WAL mode lets both processes read and write the same file.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from shopfloor.errors import ShopfloorError

__all__ = [
    "AuditEntry",
    "AuthError",
    "AuthStore",
    "NewToken",
    "Scope",
    "TokenInfo",
    "covers",
    "default_auth_path",
]

_T = TypeVar("_T")

_TOKEN: Final = re.compile(r"^sf_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_GENESIS: Final = "0" * 64
"""The ``prev_hash`` of the first audit row."""


class AuthError(ShopfloorError):
    """The security store could not be opened or a token operation is invalid."""


class Scope(StrEnum):
    """What a token may do; each scope includes the ones before it."""

    read = "read"
    operate = "operate"
    admin = "admin"

    @property
    def rank(self) -> int:
        """0 for read, 1 for operate, 2 for admin."""
        return _RANK[self]

    def includes(self, other: Scope) -> bool:
        """True when this scope grants everything ``other`` grants."""
        return self.rank >= other.rank


_RANK: Final[dict[Scope, int]] = {Scope.read: 0, Scope.operate: 1, Scope.admin: 2}


def covers(subtrees: Iterable[str], path: str) -> bool:
    """True when ``path`` (an asset, signal or event asset path) lies in one of ``subtrees``."""
    return any(path == s or path.startswith(s + "/") for s in subtrees)


def _check_subtree(path: str) -> str:
    clean = path.strip().strip("/")
    if not clean or not all(_SEGMENT.match(seg) for seg in clean.split("/")):
        raise AuthError(
            f"subtree {path!r} is not an asset path (segments of letters, digits, '_', '.', "
            "'-', separated by '/', e.g. acme/munich)"
        )
    return clean


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).strftime(_TS_FORMAT)


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as stored (never the secret): who it is, what it may do and where."""

    id: str
    name: str
    scope: Scope
    subtrees: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def state(self, now: datetime | None = None) -> Literal["active", "expired", "revoked"]:
        """``revoked``, ``expired`` or ``active`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or _now()):
            return "expired"
        return "active"

    def allows(self, path: str) -> bool:
        """True when ``path`` lies in one of the token's subtrees."""
        return covers(self.subtrees, path)

    def label(self) -> str:
        """``token:<id> (<name>)``: who did something, for events and the audit log."""
        return f"token:{self.id} ({self.name})" if self.name else f"token:{self.id}"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly created token: the secret ``token`` is shown this once and never stored."""

    token: str
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log."""

    seq: int
    ts: datetime
    token_id: str | None
    method: str
    path: str
    status: int
    client: str | None
    detail: dict[str, Any] | None


_DDL: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('read', 'operate', 'admin')),
        subtrees TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    )""",
    # A token can be revoked, once; nothing else about it ever changes, and it stays.
    """CREATE TRIGGER IF NOT EXISTS tokens_only_revoke BEFORE UPDATE ON tokens
    WHEN OLD.revoked_at IS NOT NULL OR NEW.id IS NOT OLD.id OR NEW.name IS NOT OLD.name
      OR NEW.hash IS NOT OLD.hash OR NEW.scope IS NOT OLD.scope
      OR NEW.subtrees IS NOT OLD.subtrees OR NEW.created_at IS NOT OLD.created_at
      OR NEW.expires_at IS NOT OLD.expires_at
    BEGIN SELECT RAISE(ABORT, 'a token can only be revoked'); END""",
    """CREATE TRIGGER IF NOT EXISTS tokens_no_delete BEFORE DELETE ON tokens
    BEGIN SELECT RAISE(ABORT, 'tokens are revoked, not deleted'); END""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        token_id TEXT,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER NOT NULL,
        client TEXT,
        detail TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_token ON audit (token_id, seq)",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: data shares with partner organisations (see ._shares): one row per share, its token's
    # SHA-256 and the product it offers as JSON; revoked, never changed otherwise or deleted.
    (
        """CREATE TABLE IF NOT EXISTS shares (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            partner TEXT NOT NULL,
            purpose TEXT NOT NULL,
            hash TEXT NOT NULL,
            product TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        """CREATE TRIGGER IF NOT EXISTS shares_only_revoke BEFORE UPDATE ON shares
        WHEN OLD.revoked_at IS NOT NULL OR NEW.id IS NOT OLD.id OR NEW.name IS NOT OLD.name
          OR NEW.partner IS NOT OLD.partner OR NEW.purpose IS NOT OLD.purpose
          OR NEW.hash IS NOT OLD.hash OR NEW.product IS NOT OLD.product
          OR NEW.created_by IS NOT OLD.created_by OR NEW.created_at IS NOT OLD.created_at
          OR NEW.expires_at IS NOT OLD.expires_at
        BEGIN SELECT RAISE(ABORT, 'a share can only be revoked'); END""",
        """CREATE TRIGGER IF NOT EXISTS shares_no_delete BEFORE DELETE ON shares
        BEGIN SELECT RAISE(ABORT, 'shares are revoked, not deleted'); END""",
    ),
)
"""Schema versions after the base tables: ``PRAGMA user_version`` counts those applied."""


def _row_hash(prev: str, row: Sequence[Any]) -> str:
    text = json.dumps([prev, *row], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def default_auth_path(historian_url: str) -> Path:
    """Where the security store of a DuckDB historian lives: ``<file>.auth.sqlite`` beside it.

    Raises :class:`AuthError` for an in-memory or server historian (give ``--auth-db``).
    """
    text = historian_url.strip()
    scheme, sep, rest = text.partition(":")
    no_file = AuthError(
        f"the historian {historian_url!r} has no file to keep tokens beside; "
        "give the security store's file with --auth-db"
    )
    if not sep or (len(scheme) == 1 and scheme.isalpha()):
        path = text  # a plain path (or a Windows drive letter)
    elif scheme.lower() == "duckdb":
        path = rest[2:] if rest.startswith("//") else rest
    else:
        raise no_file  # a server (PostgreSQL): the store needs its own file
    if not path or path == ":memory:":
        raise no_file
    p = Path(path).expanduser()
    return p.with_name(p.stem + ".auth.sqlite")


class AuthStore:
    """The security store (tokens and audit log) in one SQLite file; see the module docs.

    Use as an async context manager. Every operation runs in one worker thread on one
    connection; several processes may use the same file at once (WAL, busy timeout).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._timeout = busy_timeout_s
        self._con: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"AuthStore({str(self.path)!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (or create, readable by its owner only) the file and its tables."""
        if self._con is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopfloor-auth")
        loop = asyncio.get_running_loop()
        try:
            self._con = await loop.run_in_executor(executor, self._connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch(mode=0o600)
            con = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise AuthError(f"cannot open the security store {self.path}: {exc}") from exc
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("BEGIN IMMEDIATE")
            for stmt in _DDL:
                con.execute(stmt)
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for stmt in statements:
                    con.execute(stmt)
                con.execute(f"PRAGMA user_version = {number:d}")
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            con.close()
            raise AuthError(f"cannot open the security store {self.path}: {exc}") from exc
        return con

    async def close(self) -> None:
        """Close the file (the store can be opened again)."""
        con, executor = self._con, self._executor
        self._con = self._executor = None
        if con is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, con.close)
        finally:
            executor.shutdown(wait=True)

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._con is None or self._executor is None:
            raise AuthError(f"the security store {self.path} is not open")
        con = self._con
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, con)
        except sqlite3.Error as exc:
            raise AuthError(f"{what} failed on {self.path}: {exc}") from exc

    @staticmethod
    def _tx(con: sqlite3.Connection, fn: Callable[[], _T]) -> _T:
        con.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return result

    # -- tokens -----------------------------------------------------------------------

    async def create_token(
        self,
        scope: Scope | str,
        subtrees: Sequence[str],
        *,
        name: str = "",
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        actor: str = "cli",
        token: str | None = None,
    ) -> NewToken:
        """Create a token; the returned :class:`NewToken` holds the only copy of the secret.

        ``subtrees`` must name at least one asset path; ``expires_in`` is counted from now.
        ``token`` registers that token instead of a new random one (``sf_<12 hex>_<at least
        20 of A-Z a-z 0-9 _ ->``, e.g. a demo's fixed token); its id must be unused.
        The creation is written to the audit log (method ``CLI``, detail without the secret).
        """
        given = None if token is None else _TOKEN.match(token.strip())
        if token is not None and given is None:
            raise AuthError(
                "a token looks like sf_<12 hex digits>_<at least 20 of A-Z a-z 0-9 _ ->, e.g. "
                "sf_0123456789ab_" + "x" * 24
            )
        try:
            sc = Scope(scope)
        except ValueError as exc:
            raise AuthError(
                f"unknown scope {scope!r}: use one of {', '.join(s.value for s in Scope)}"
            ) from exc
        if isinstance(subtrees, str):
            subtrees = [subtrees]
        trees = tuple(dict.fromkeys(_check_subtree(s) for s in subtrees))
        if not trees:
            raise AuthError("a token needs at least one subtree (the enterprise path for all)")
        now = _now()
        if expires_in is not None:
            if expires_in <= timedelta(0):
                raise AuthError(f"the expiry must lie in the future, got {expires_in}")
            expires_at = now + expires_in
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise AuthError("the expiry time needs a time zone")
            if expires_at <= now:
                raise AuthError(f"the expiry {expires_at.isoformat()} is in the past")

        def work(con: sqlite3.Connection) -> NewToken:
            def tx() -> NewToken:
                if given is not None:
                    token_id, secret = given.group(1), given.group(0)
                    if con.execute("SELECT 1 FROM tokens WHERE id = ?", [token_id]).fetchone():
                        raise AuthError(f"a token with id {token_id} exists already")
                else:
                    token_id = secrets.token_hex(6)
                    while con.execute("SELECT 1 FROM tokens WHERE id = ?", [token_id]).fetchone():
                        token_id = secrets.token_hex(6)
                    secret = f"sf_{token_id}_{secrets.token_urlsafe(32)}"
                info = TokenInfo(token_id, name, sc, trees, now, expires_at)
                con.execute(
                    "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    [
                        token_id,
                        name,
                        _hash(secret),
                        sc.value,
                        json.dumps(list(trees)),
                        _fmt(now),
                        _fmt(expires_at),
                    ],
                )
                detail = {
                    "action": "token create",
                    "by": actor,
                    "name": name,
                    "scope": sc.value,
                    "subtrees": list(trees),
                    "expires_at": _fmt(expires_at),
                }
                self._append(con, token_id, "CLI", "token create", 201, None, detail)
                return NewToken(secret, info)

            return self._tx(con, tx)

        return await self._run("creating a token", work)

    async def revoke_token(self, token_id: str, *, actor: str = "cli") -> TokenInfo:
        """Revoke a token at once (the next request with it fails); return it as revoked.

        Raises :class:`AuthError` for an unknown or already revoked token.
        """

        def work(con: sqlite3.Connection) -> TokenInfo:
            def tx() -> TokenInfo:
                row = con.execute("SELECT revoked_at FROM tokens WHERE id = ?", [token_id])
                found = row.fetchone()
                if found is None:
                    raise AuthError(f"no token {token_id!r}")
                if found[0] is not None:
                    raise AuthError(f"token {token_id} was already revoked at {found[0]}")
                con.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ?", [_fmt(_now()), token_id]
                )
                detail = {"action": "token revoke", "by": actor}
                self._append(con, token_id, "CLI", "token revoke", 200, None, detail)
                info = self._token(con, token_id)
                assert info is not None
                return info

            return self._tx(con, tx)

        return await self._run("revoking a token", work)

    _SELECT: Final = (
        "SELECT t.id, t.name, t.scope, t.subtrees, t.created_at, t.expires_at, t.revoked_at, "
        "(SELECT a.ts FROM audit a WHERE a.token_id = t.id AND a.method <> 'CLI' "
        "ORDER BY a.seq DESC LIMIT 1) FROM tokens t"
    )

    @staticmethod
    def _info(row: Sequence[Any]) -> TokenInfo:
        return TokenInfo(
            id=row[0],
            name=row[1],
            scope=Scope(row[2]),
            subtrees=tuple(json.loads(row[3])),
            created_at=_parse(row[4]) or _now(),
            expires_at=_parse(row[5]),
            revoked_at=_parse(row[6]),
            last_used_at=_parse(row[7]),
        )

    def _token(self, con: sqlite3.Connection, token_id: str) -> TokenInfo | None:
        row = con.execute(self._SELECT + " WHERE t.id = ?", [token_id]).fetchone()
        return None if row is None else self._info(row)

    async def tokens(self) -> list[TokenInfo]:
        """Every token ever created (revoked ones too), oldest first, with its last use."""
        return await self._run(
            "listing tokens",
            lambda con: [
                self._info(r)
                for r in con.execute(self._SELECT + " ORDER BY t.created_at, t.id").fetchall()
            ],
        )

    async def token(self, token_id: str) -> TokenInfo | None:
        """The token with id ``token_id``, or ``None``."""
        return await self._run("reading a token", lambda con: self._token(con, token_id))

    async def authenticate(self, token: str) -> tuple[str | None, TokenInfo | None]:
        """``(claimed id, token)`` for a presented token; the token is ``None`` when invalid.

        The claimed id is the id part of a well-formed token (for the audit log even when the
        token is wrong). The caller checks :meth:`TokenInfo.state` (expired, revoked).
        """
        m = _TOKEN.match(token.strip())
        if m is None:
            return None, None
        token_id = m.group(1)
        digest = _hash(token.strip())

        def work(con: sqlite3.Connection) -> TokenInfo | None:
            row = con.execute(
                "SELECT id, name, scope, subtrees, created_at, expires_at, revoked_at, NULL, hash "
                "FROM tokens WHERE id = ?",
                [token_id],
            ).fetchone()
            if row is None or not hmac.compare_digest(str(row[8]), digest):
                return None
            return self._info(row)

        return token_id, await self._run("checking a token", work)

    # -- audit ------------------------------------------------------------------------

    @staticmethod
    def _append(
        con: sqlite3.Connection,
        token_id: str | None,
        method: str,
        path: str,
        status: int,
        client: str | None,
        detail: dict[str, Any] | None,
    ) -> int:
        """Insert one audit row, chained to the last (inside the caller's transaction)."""
        last = con.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev = str(last[0]) if last else _GENESIS
        text = None if detail is None else json.dumps(detail, ensure_ascii=False, default=str)
        row = [_fmt(_now()), token_id, method, path, int(status), client, text]
        cur = con.execute(
            "INSERT INTO audit (ts, token_id, method, path, status, client, detail, prev_hash, "
            "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [*row, prev, _row_hash(prev, row)],
        )
        return int(cur.lastrowid or 0)

    async def audit(
        self,
        token_id: str | None,
        method: str,
        path: str,
        status: int,
        *,
        client: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append one row to the audit log; return its sequence number."""
        return await self._run(
            "writing the audit log",
            lambda con: self._tx(
                con, lambda: self._append(con, token_id, method, path, status, client, detail)
            ),
        )

    async def audit_entries(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        token_id: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[AuditEntry]:
        """Audit rows with ``after < seq < before`` (of one token when given)."""
        sql = "SELECT seq, ts, token_id, method, path, status, client, detail FROM audit WHERE 1=1"
        params: list[Any] = []
        if after is not None:
            sql += " AND seq > ?"
            params.append(after)
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if token_id is not None:
            sql += " AND token_id = ?"
            params.append(token_id)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(max(0, int(limit)))

        def work(con: sqlite3.Connection) -> list[AuditEntry]:
            return [
                AuditEntry(
                    seq=int(r[0]),
                    ts=_parse(r[1]) or _now(),
                    token_id=r[2],
                    method=r[3],
                    path=r[4],
                    status=int(r[5]),
                    client=r[6],
                    detail=None if r[7] is None else json.loads(r[7]),
                )
                for r in con.execute(sql, params).fetchall()
            ]

        return await self._run("reading the audit log", work)

    async def verify_audit(self) -> int:
        """Check the audit log's hash chain; return the number of rows.

        Raises :class:`AuthError` naming the first row that was changed, or the gap where
        rows were removed.
        """

        def work(con: sqlite3.Connection) -> int:
            prev, n = _GENESIS, 0
            cur = con.execute(
                "SELECT seq, ts, token_id, method, path, status, client, detail, prev_hash, hash "
                "FROM audit ORDER BY seq"
            )
            for r in cur:
                seq = int(r[0])
                if r[8] != prev:
                    raise AuthError(
                        f"the audit log was tampered with: the chain breaks at row {seq} "
                        "(a row before it was removed or changed)"
                    )
                if _row_hash(prev, list(r[1:8])) != r[9]:
                    raise AuthError(f"the audit log was tampered with: row {seq} was changed")
                prev, n = str(r[9]), n + 1
            return n

        return await self._run("verifying the audit log", work)
