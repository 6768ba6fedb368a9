"""Data shares: named data products offered to partner organisations, each with its own token.

A **share** offers one data product to one partner: a selection of signals or assets
(:attr:`ShareProduct.selectors`), a time window and an aggregation level
(:class:`ShareLevel`): ``raw`` samples, only aggregates per bucket (``1h``: min, max, avg
and count of every bucket of an hour, never a single sample; buckets are at least a minute
wide), or only OEE (``oee:hour``, ``oee:day``, ``oee:shift``: availability, performance,
quality and OEE per window, no counts). It names the partner, says what the data is for
(``purpose``) and always expires.

**Selectors** are asset or signal paths, or patterns of them: a whole segment ``*`` stands
for one path segment, ``**`` for any number of segments (none included), e.g.
``acme/munich/body-shop/line-1/*/*/temperature`` or ``acme/munich/**/temperature``; the
first segment is always a name. For ``raw`` and aggregate shares a selector
takes every signal it matches and every signal below what it matches (an asset path shares
all signals of the asset and of everything under it); for OEE shares it names exactly the
assets whose OEE is offered. Patterns are evaluated on every request, so a signal that
appears later and matches is part of the product.

**Share tokens** look like ``sfs_<id>_<secret>`` (256 random bits) and, like API tokens,
only their SHA-256 is stored (in the security store's ``shares`` table, beside the tokens
and the audit log). A share token reads its own product under ``/api/v1/shared/{share}``
and nothing else: every other route answers 403. Shares are read from the store on every
request (nothing is cached), so an expiry or a revocation holds from the next request on.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.api._auth import AuthError, AuthStore, _fmt, _hash, _now, _parse, covers

__all__ = [
    "MIN_BUCKET",
    "SHARE_TOKEN",
    "NewShare",
    "Share",
    "ShareError",
    "ShareLevel",
    "ShareProduct",
    "ShareStore",
    "check_selector",
    "is_share_token",
    "selector_prefix",
]

SHARE_TOKEN: Final = re.compile(r"^sfs_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
"""A share token: ``sfs_<id>_<secret>``."""

MIN_BUCKET: Final = timedelta(minutes=1)
"""The narrowest bucket an aggregate share may have (narrower ones would give raw values)."""

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SEGMENT: Final = re.compile(r"^(?:\*|\*\*|[A-Za-z0-9][A-Za-z0-9_.-]*)$")
_OEE_BY: Final = ("hour", "day", "shift")

LevelKind = Literal["raw", "aggregate", "oee"]
OeeBy = Literal["hour", "day", "shift"]


class ShareError(AuthError):
    """A share operation is invalid (bad name, selector, level, window or expiry)."""


def is_share_token(token: str) -> bool:
    """True when ``token`` has the form of a share token (it may still be wrong)."""
    return SHARE_TOKEN.match(token.strip()) is not None


def _width_text(width: timedelta) -> str:
    secs = int(width.total_seconds())
    for unit, n in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if secs % n == 0:
            return f"{secs // n}{unit}"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class ShareLevel:
    """How much detail a share gives: raw samples, aggregates per bucket, or OEE only."""

    kind: LevelKind
    bucket: timedelta | None = None
    """The bucket width of an aggregate share."""
    by: OeeBy | None = None
    """The OEE windows of an OEE share."""

    @classmethod
    def parse(cls, text: str) -> ShareLevel:
        """``raw``; a bucket width of at least a minute (``15m``, ``1h``, ``1d``, ``PT1H``);
        or ``oee:hour``, ``oee:day``, ``oee:shift`` (``oee`` alone: per hour)."""
        s = text.strip().lower()
        if s == "raw":
            return cls("raw")
        if s == "oee" or s.startswith("oee:"):
            by = s.partition(":")[2] or "hour"
            if by not in _OEE_BY:
                raise ShareError(f"level {text!r}: OEE comes per hour, day or shift (oee:hour)")
            return cls("oee", by=by)  # type: ignore[arg-type]
        from shopfloor.api._deps import parse_duration

        try:
            width = parse_duration(s)
        except ValueError:
            raise ShareError(
                f"level {text!r}: use raw, a bucket width of at least 1m (15m, 1h, 1d: min, "
                "max, avg and count per bucket) or oee:hour, oee:day, oee:shift"
            ) from None
        if width < MIN_BUCKET:
            raise ShareError(
                f"level {text!r}: aggregate buckets must be at least {_width_text(MIN_BUCKET)} "
                "wide (narrower ones would hand out raw values); use raw to share samples"
            )
        if width % timedelta(seconds=1):
            raise ShareError(f"level {text!r}: the bucket must be whole seconds")
        return cls("aggregate", bucket=width)

    def __str__(self) -> str:
        if self.kind == "raw":
            return "raw"
        if self.kind == "oee":
            return f"oee:{self.by}"
        assert self.bucket is not None
        return _width_text(self.bucket)

    @property
    def selects_signals(self) -> bool:
        """True for raw and aggregate shares (selectors name signals), false for OEE."""
        return self.kind != "oee"


def check_selector(text: str) -> str:
    """The selector ``text`` cleaned (no outer ``/``); :class:`ShareError` when malformed."""
    clean = text.strip().strip("/")
    segments = clean.split("/")
    if not clean or not all(_SEGMENT.match(seg) for seg in segments):
        raise ShareError(
            f"selector {text!r} is not a path or pattern: segments of letters, digits, '_', "
            "'.', '-', or a whole-segment wildcard '*' (one segment) or '**' (any), "
            "separated by '/', e.g. acme/munich/body-shop/line-1/*/*/temperature"
        )
    if segments[0] in ("*", "**"):
        raise ShareError(f"selector {text!r} must start with the enterprise's id, not a wildcard")
    return clean


def selector_prefix(selector: str) -> str:
    """The literal segments of ``selector`` before its first wildcard (an asset path)."""
    out = []
    for seg in selector.split("/"):
        if seg in ("*", "**"):
            break
        out.append(seg)
    return "/".join(out)


def _regex(selector: str, *, below: bool) -> str:
    """An RE2 (and Python) pattern matching the paths ``selector`` names (and those below)."""
    segments = selector.split("/")
    parts = ["^", segments[0].replace(".", r"\.")]
    for seg in segments[1:]:
        if seg == "**":
            parts.append("(?:/[^/]+)*")
        elif seg == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + seg.replace(".", r"\."))
    parts.append("(?:/.+)?$" if below else "$")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class ShareProduct:
    """What a share offers: selectors, the aggregation level and the time window."""

    selectors: tuple[str, ...]
    level: ShareLevel
    start: datetime
    end: datetime | None = None
    """Exclusive; ``None``: open (up to now, for as long as the share lives)."""

    def _patterns(self) -> list[str]:
        return [_regex(s, below=self.level.selects_signals) for s in self.selectors]

    def selects(self, path: str) -> bool:
        """True when ``path`` (a signal, or an asset for OEE shares) is in the product."""
        return any(re.match(p, path) for p in self._patterns())

    def mask(self, paths: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """True where a path is in the product (Arrow kernels, for whole catalogs)."""
        mask: pa.Array | pa.ChunkedArray | None = None
        for p in self._patterns():
            m = pc.match_substring_regex(paths, p)
            mask = m if mask is None else pc.or_(mask, m)
        assert mask is not None
        return pc.fill_null(mask, False)

    def within(self, subtrees: Sequence[str]) -> bool:
        """True when everything the selectors can match lies in ``subtrees``."""
        return all(covers(subtrees, selector_prefix(s)) for s in self.selectors)

    def to_json(self) -> dict[str, Any]:
        """The product as stored (JSON)."""
        return {
            "select": list(self.selectors),
            "level": str(self.level),
            "start": _fmt(self.start),
            "end": _fmt(self.end),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ShareProduct:
        """The product stored as :meth:`to_json`."""
        start = _parse(value["start"])
        assert start is not None
        return cls(
            tuple(value["select"]), ShareLevel.parse(value["level"]), start, _parse(value["end"])
        )


@dataclass(frozen=True, slots=True)
class Share:
    """A share as stored (never its token's secret)."""

    id: str
    name: str
    partner: str
    purpose: str
    product: ShareProduct
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def state(self, now: datetime | None = None) -> Literal["active", "expired", "revoked"]:
        """``revoked``, ``expired`` or ``active`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or _now()):
            return "expired"
        return "active"

    def label(self) -> str:
        """``share:<id> (<name>)``."""
        return f"share:{self.id} ({self.name})"


@dataclass(frozen=True, slots=True)
class NewShare:
    """A freshly created share: ``token`` is shown this once and never stored."""

    token: str
    share: Share


def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None:
        raise ShareError(f"the {what} time needs a time zone")
    return ts.astimezone(UTC)


class ShareStore:
    """Shares in the security store of ``auth`` (its SQLite file, worker thread and audit log).

    Cheap to create: it holds no state of its own, so one per request is fine.
    """

    def __init__(self, auth: AuthStore) -> None:
        self.auth = auth

    _SELECT: Final = (
        "SELECT s.id, s.name, s.partner, s.purpose, s.product, s.created_by, s.created_at, "
        "s.expires_at, s.revoked_at, (SELECT a.ts FROM audit a WHERE a.token_id = s.id "
        "AND a.method <> 'CLI' ORDER BY a.seq DESC LIMIT 1) FROM shares s"
    )

    @staticmethod
    def _share(row: Sequence[Any]) -> Share:
        created, expires = _parse(row[6]), _parse(row[7])
        assert created is not None
        assert expires is not None
        return Share(
            id=row[0],
            name=row[1],
            partner=row[2],
            purpose=row[3],
            product=ShareProduct.from_json(json.loads(row[4])),
            created_by=row[5],
            created_at=created,
            expires_at=expires,
            revoked_at=_parse(row[8]),
            last_used_at=_parse(row[9]),
        )

    def _find(self, con: sqlite3.Connection, ref: str) -> Share | None:
        row = con.execute(self._SELECT + " WHERE s.id = ? OR s.name = ?", [ref, ref]).fetchone()
        return None if row is None else self._share(row)

    async def create(
        self,
        name: str,
        *,
        partner: str,
        purpose: str,
        select: Sequence[str],
        level: ShareLevel | str,
        start: datetime,
        end: datetime | None = None,
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        actor: str = "cli",
        audit: bool = True,
    ) -> NewShare:
        """Create a share; the returned :class:`NewShare` holds the only copy of its token.

        ``select`` needs at least one selector, the share an expiry (``expires_in`` counts
        from now). With ``audit`` the creation is written to the audit log (method ``CLI``;
        the API leaves that to its audit middleware).
        """
        name = name.strip()
        if not _NAME.match(name):
            raise ShareError(
                f"share name {name!r}: 1 to 64 letters, digits, '_', '.', '-' (starting with a "
                "letter or digit), e.g. supplier-x-oee"
            )
        partner, purpose = partner.strip(), purpose.strip()
        if not partner:
            raise ShareError("a share needs the partner organisation it is for")
        if not purpose:
            raise ShareError("a share needs a purpose (what the partner uses the data for)")
        if isinstance(select, str):
            select = [select]
        selectors = tuple(dict.fromkeys(check_selector(s) for s in select))
        if not selectors:
            raise ShareError("a share needs at least one selector (an asset or signal path)")
        lvl = level if isinstance(level, ShareLevel) else ShareLevel.parse(level)
        start = _aware(start, "start")
        if end is not None:
            end = _aware(end, "end")
            if end <= start:
                raise ShareError(f"the window's end {end.isoformat()} is not after its start")
        now = _now()
        if expires_in is not None:
            if expires_in <= timedelta(0):
                raise ShareError(f"the expiry must lie in the future, got {expires_in}")
            expires_at = now + expires_in
        if expires_at is None:
            raise ShareError("a share needs an expiry (e.g. 30d, or a date)")
        expires_at = _aware(expires_at, "expiry")
        if expires_at <= now:
            raise ShareError(f"the expiry {expires_at.isoformat()} is in the past")
        product = ShareProduct(selectors, lvl, start, end)

        def work(con: sqlite3.Connection) -> NewShare:
            def tx() -> NewShare:
                if con.execute("SELECT 1 FROM shares WHERE name = ?", [name]).fetchone():
                    raise ShareError(f"a share named {name!r} exists (names are never reused)")
                while True:
                    share_id = secrets.token_hex(6)
                    taken = con.execute(
                        "SELECT 1 FROM shares WHERE id = ?1 UNION ALL "
                        "SELECT 1 FROM tokens WHERE id = ?1",
                        [share_id],
                    ).fetchone()
                    if not taken:
                        break
                token = f"sfs_{share_id}_{secrets.token_urlsafe(32)}"
                con.execute(
                    "INSERT INTO shares VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [
                        share_id,
                        name,
                        partner,
                        purpose,
                        _hash(token),
                        json.dumps(product.to_json()),
                        actor,
                        _fmt(now),
                        _fmt(expires_at),
                    ],
                )
                if audit:
                    detail = {
                        "action": "share create",
                        "by": actor,
                        "name": name,
                        "partner": partner,
                        "purpose": purpose,
                        **product.to_json(),
                        "expires_at": _fmt(expires_at),
                    }
                    self.auth._append(con, share_id, "CLI", "share create", 201, None, detail)
                share = self._find(con, share_id)
                assert share is not None
                return NewShare(token, share)

            return self.auth._tx(con, tx)

        return await self.auth._run("creating a share", work)

    async def revoke(self, ref: str, *, actor: str = "cli", audit: bool = True) -> Share:
        """Revoke the share with id or name ``ref`` at once; return it as revoked.

        Raises :class:`ShareError` for an unknown or already revoked share.
        """

        def work(con: sqlite3.Connection) -> Share:
            def tx() -> Share:
                found = self._find(con, ref)
                if found is None:
                    raise ShareError(f"no share {ref!r}")
                if found.revoked_at is not None:
                    raise ShareError(
                        f"share {found.name} was already revoked at {_fmt(found.revoked_at)}"
                    )
                con.execute(
                    "UPDATE shares SET revoked_at = ? WHERE id = ?", [_fmt(_now()), found.id]
                )
                if audit:
                    detail = {"action": "share revoke", "by": actor, "name": found.name}
                    self.auth._append(con, found.id, "CLI", "share revoke", 200, None, detail)
                share = self._find(con, found.id)
                assert share is not None
                return share

            return self.auth._tx(con, tx)

        return await self.auth._run("revoking a share", work)

    async def shares(self) -> list[Share]:
        """Every share ever created (revoked and expired ones too), oldest first."""
        return await self.auth._run(
            "listing shares",
            lambda con: [
                self._share(r)
                for r in con.execute(self._SELECT + " ORDER BY s.created_at, s.id").fetchall()
            ],
        )

    async def get(self, ref: str) -> Share | None:
        """The share with id or name ``ref``, or ``None``."""
        return await self.auth._run("reading a share", lambda con: self._find(con, ref))

    async def authenticate(self, token: str) -> tuple[str | None, Share | None]:
        """``(claimed id, share)`` for a presented share token; the share is ``None`` when
        the token is wrong. The caller checks :meth:`Share.state`."""
        m = SHARE_TOKEN.match(token.strip())
        if m is None:
            return None, None
        share_id = m.group(1)
        digest = _hash(token.strip())

        def work(con: sqlite3.Connection) -> Share | None:
            row = con.execute("SELECT hash FROM shares WHERE id = ?", [share_id]).fetchone()
            if row is None or not hmac.compare_digest(str(row[0]), digest):
                return None
            return self._find(con, share_id)

        return share_id, await self.auth._run("checking a share token", work)
