"""Fresh historian stores for the engine-parametrised suite: DuckDB and PostgreSQL.

PostgreSQL tests run against the real server named by ``SHOPFLOOR_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``; ``scripts/services.sh`` starts it), each
store in its own randomly named schema that is dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from psycopg import sql

PG_URL = os.environ.get("SHOPFLOOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ENGINES = ("duckdb", "postgres")


def new_schema() -> str:
    """A schema name no other test uses."""
    return f"sf_test_{secrets.token_hex(6)}"


def pg_url(schema: str, **params: str) -> str:
    """The test server's URL for ``schema`` with extra query parameters."""
    query = "&".join([f"schema={schema}", *(f"{k}={v}" for k, v in params.items())])
    return f"{PG_URL}?{query}"


async def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@asynccontextmanager
async def fresh_store(engine: str, directory: Path | None = None) -> AsyncIterator[str]:
    """The URL of an empty store of ``engine`` (a DuckDB file in ``directory``, else in
    memory; a new PostgreSQL schema, dropped on exit)."""
    if engine == "duckdb":
        yield f"duckdb:{directory / 'h.duckdb'}" if directory else "duckdb://:memory:"
        return
    if engine != "postgres":
        raise ValueError(f"unknown engine {engine!r}")
    schema = new_schema()
    try:
        yield pg_url(schema)
    finally:
        await drop_schema(schema)
