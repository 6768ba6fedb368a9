"""The DuckDB engine's own surface: public names and URL forms.

What every engine does (events, dead letters, errors, retention, persistence) is tested on
DuckDB and PostgreSQL alike in ``test_historian_engines.py`` and
``test_historian_properties.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import shopfloor.historian as public
from shopfloor.errors import HistorianError
from shopfloor.historian import open_historian
from shopfloor.historian._duckdb import DuckDBHistorian


def test_public_surface() -> None:
    assert sorted(public.__all__) == sorted(
        [
            "DEAD_LETTER_SCHEMA",
            "EVENT_SCHEMA",
            "Historian",
            "RetentionResult",
            "SignalInfo",
            "open_historian",
        ]
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("duckdb:///abs/dir/h.duckdb", "/abs/dir/h.duckdb"),
        ("duckdb:rel/h.duckdb", "rel/h.duckdb"),
        ("duckdb://:memory:", ":memory:"),
        ("duckdb::memory:", ":memory:"),
        ("some/dir/h.duckdb", "some/dir/h.duckdb"),
    ],
)
def test_url_forms(url: str, expected: str) -> None:
    h = open_historian(url)
    assert isinstance(h, DuckDBHistorian)
    assert h.path == expected


def test_url_options_reach_duckdb(tmp_path: Path) -> None:
    url = f"duckdb:{tmp_path / 'h.duckdb'}?memory_limit=256MB&threads=1"
    h = open_historian(url)
    assert isinstance(h, DuckDBHistorian)
    assert (h.path, h.threads, h.memory_limit) == (str(tmp_path / "h.duckdb"), 1, "256MB")

    async def settings() -> tuple[object, ...] | None:
        async with h:
            return await h._run(
                "reading settings",
                lambda con: con.execute(
                    "SELECT current_setting('memory_limit'), current_setting('threads')"
                ).fetchone(),
            )

    row = asyncio.run(settings())
    assert row is not None
    memory, threads = row
    assert str(memory).replace(" ", "").upper().startswith(("244", "256")), memory
    assert str(threads) == "1"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("duckdb:h.duckdb?memory_limit=lots", "memory_limit must be a size"),
        ("duckdb:h.duckdb?threads=0", "threads must be a positive integer"),
        ("duckdb:h.duckdb?cache=1", "unknown option 'cache'"),
    ],
)
def test_bad_url_options_are_named(url: str, named: str) -> None:
    with pytest.raises(HistorianError, match=named):
        open_historian(url)


@pytest.mark.parametrize("url", ["mysql://host/db", "sqlite:x.db", "h.sqlite", "duckdb:"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(HistorianError) as info:
        open_historian(url)
    if "://" in url and not url.startswith("duckdb"):
        assert url.split(":")[0] in str(info.value)
