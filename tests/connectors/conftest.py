from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _opcua_testserver import TestServer


@pytest.fixture
async def ua_server() -> AsyncIterator[TestServer]:
    srv = TestServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
