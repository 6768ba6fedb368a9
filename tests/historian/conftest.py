"""Fixtures of the historian suite: one store per engine (DuckDB and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _historian_engines import ENGINES, fresh_store


@pytest.fixture(params=ENGINES)
async def historian_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty historian: a DuckDB file, or a fresh PostgreSQL schema."""
    async with fresh_store(request.param, tmp_path) as url:
        yield url
