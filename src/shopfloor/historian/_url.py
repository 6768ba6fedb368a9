"""Choosing a historian engine by URL."""

from __future__ import annotations

from pathlib import Path

from shopfloor.errors import HistorianError
from shopfloor.historian.base import Historian

__all__ = ["open_historian"]

_SCHEMES = ("duckdb", "postgresql", "postgres")


def open_historian(url: str) -> Historian:
    """The historian engine for ``url`` (not yet opened: use it with ``async with``).

    Accepted forms:

    * ``duckdb:///abs/path.duckdb`` — an absolute file path;
    * ``duckdb:relative/path.duckdb`` (or ``duckdb:/abs/path.duckdb``) — a file path;
    * ``duckdb://:memory:`` or ``duckdb::memory:`` — an in-memory database;
    * a plain path ending in ``.duckdb``;
    * ``postgresql://user@host:port/db`` (or ``postgres://``) — a PostgreSQL server, with
      optional ``?schema=NAME`` (default ``public``), ``timescale=auto|on|off``,
      ``pool_min=``/``pool_max=``; other query parameters go to libpq.

    Any other scheme raises :class:`~shopfloor.errors.HistorianError` naming it.
    """
    from shopfloor.historian._duckdb import DuckDBHistorian

    text = url.strip()
    scheme, sep, rest = text.partition(":")
    # "C:\\x.duckdb" style drive letters are paths, not schemes.
    if not sep or (len(scheme) == 1 and scheme.isalpha()):
        if text.endswith(".duckdb"):
            return DuckDBHistorian(Path(text).expanduser())
        raise HistorianError(
            f"cannot open historian {url!r}: expected a URL such as "
            "duckdb:///abs/path.duckdb, duckdb:relative/path.duckdb or duckdb://:memory:"
        )
    if scheme.lower() in ("postgresql", "postgres"):
        from shopfloor.historian._postgres import PostgresHistorian

        return PostgresHistorian.from_url(text)
    if scheme.lower() != "duckdb":
        raise HistorianError(
            f"unknown historian scheme {scheme!r} in {url!r}; supported: {', '.join(_SCHEMES)}"
        )
    if rest.startswith("//"):
        rest = rest[2:]  # duckdb:///abs → "/abs"; duckdb://:memory: → ":memory:"
    if rest == ":memory:":
        return DuckDBHistorian(":memory:")
    if not rest:
        raise HistorianError(f"historian URL {url!r} names no file")
    return DuckDBHistorian(Path(rest).expanduser())
