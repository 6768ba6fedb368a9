"""Schemathesis over ``/api/v1/openapi.json`` of a real server: no operation answers 500.

The server runs with uvicorn in its own thread over a historian of its own (the fuzzed
writes must not touch the data other tests share). Every operation gets a few positive and
negative examples, with an admin token for the whole factory. 502 and 503 are the answers a
setpoint write documents when its device is away or no runtime is attached; any other 5xx
fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from _api_helpers import ApiData, build, factory_text
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from shopfloor.api import AuthStore, create_app, running_server, server_config
from shopfloor.historian import open_historian
from shopfloor.model import parse_factory

_DOCUMENTED_5XX = {502, 503}
EXAMPLES = int(os.environ.get("SHOPFLOOR_FUZZ_EXAMPLES", "4"))
"""Examples per operation and generation mode: few in the default suite, more on demand
(``SHOPFLOOR_FUZZ_EXAMPLES=100 python -m pytest tests/api/test_api_schemathesis.py``)."""


class _Server:
    """The API over ``data`` on a free port, in a thread with its own event loop."""

    def __init__(self, data: ApiData) -> None:
        self.data = data
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="schemathesis-api", daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        assert self._ready.wait(60), "the server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        factory = parse_factory(factory_text(), str(self.data.factory_file))
        async with open_historian(self.data.db) as h, AuthStore(self.data.auth_db) as auth:
            app = create_app(factory, h, auth)
            config = server_config(app, "127.0.0.1", 0, log_level="warning")
            async with running_server(config) as server:
                self.url = server.url
                self._ready.set()
                await self._stop.wait()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    data = build(Path(tmp_path_factory.mktemp("schemathesis")))
    with _Server(data) as server:
        yield server


def _check(case: schemathesis.Case, token: str, failures: list[str], seen: Counter[int]) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(timeout=30)
    status = response.status_code
    seen[status] += 1
    if status < 500:
        return
    declared = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    media = (response.headers.get("content-type") or [""])[0]
    problem = media.startswith("application/problem+json")
    if status in _DOCUMENTED_5XX and str(status) in declared and problem:
        return
    failures.append(
        f"{case.method} {case.formatted_path} {case.query} → {status}: {response.text[:300]}"
    )


@pytest.mark.timeout(600)
def test_no_server_error_on_any_operation(fuzzed_server: _Server) -> None:
    """A few positive and negative examples per operation (schemathesis's strategies driven
    by hypothesis here: its pytest plugin's lazy loader does not run on pytest 9)."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/api/v1/openapi.json")
    token = fuzzed_server.data.tokens["admin_all"]
    failures: list[str] = []
    seen: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                _check(case, token, failures, seen)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (e.g. no parameters)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert operations >= 20
    assert not failures, "\n".join(failures)
    print(f"{operations} operations, statuses {dict(sorted(seen.items()))}")
    assert seen[200] >= operations  # the token works: most valid requests succeed
    assert seen[401] == 0
