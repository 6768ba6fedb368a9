"""Choosing a historian engine by URL."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

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
    * DuckDB URLs take ``?threads=N`` and ``?memory_limit=SIZE`` (DuckDB's own setting, e.g.
      ``256MB`` or ``1GB``), joined with ``&``: ``duckdb:plant.duckdb?memory_limit=512MB``;
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
    rest, _, query = rest.partition("?")
    threads, memory_limit = _duckdb_options(url, query)
    if rest == ":memory:":
        return DuckDBHistorian(":memory:", threads=threads, memory_limit=memory_limit)
    if not rest:
        raise HistorianError(f"historian URL {url!r} names no file")
    return DuckDBHistorian(Path(rest).expanduser(), threads=threads, memory_limit=memory_limit)


def _duckdb_options(url: str, query: str) -> tuple[int | None, str | None]:
    """``threads`` and ``memory_limit`` of a DuckDB URL's query (HistorianError if bad)."""
    threads: int | None = None
    memory_limit: str | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "threads":
            if not value.isdigit() or int(value) < 1:
                raise HistorianError(
                    f"historian URL {url!r}: threads must be a positive integer, not {value!r}"
                )
            threads = int(value)
        elif key == "memory_limit":
            if not re.fullmatch(
                r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", value, re.I
            ):
                raise HistorianError(
                    f"historian URL {url!r}: memory_limit must be a size such as 256MB or "
                    f"1GB, not {value!r}"
                )
            memory_limit = value.strip()
        else:
            raise HistorianError(
                f"historian URL {url!r}: unknown option {key!r} (DuckDB takes threads and "
                "memory_limit)"
            )
    return threads, memory_limit
