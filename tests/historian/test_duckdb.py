"""The DuckDB engine's own surface: public names and URL forms.

What every engine does (events, dead letters, errors, retention, persistence) is tested on
DuckDB and PostgreSQL alike in ``test_historian_engines.py`` and
``test_historian_properties.py``.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("url", ["mysql://host/db", "sqlite:x.db", "h.sqlite", "duckdb:"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(HistorianError) as info:
        open_historian(url)
    if "://" in url and not url.startswith("duckdb"):
        assert url.split(":")[0] in str(info.value)
