"""The clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), both on httpx.

Each call runs a plan of :mod:`._plans` (the same for both clients) and turns its Arrow
table into the frame asked for (:mod:`._frames`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypeVar

import httpx
import pyarrow as pa

from shopfloor import __version__
from shopfloor.sdk._errors import TransportError
from shopfloor.sdk._frames import FrameKind, check_frame, to_frame
from shopfloor.sdk._plans import (
    Plan,
    Request,
    TimeLike,
    events_plan,
    history_plan,
    kpi_plan,
    latest_plan,
)

__all__ = ["AsyncClient", "Client", "DataFrame"]

_T = TypeVar("_T")

DataFrame: TypeAlias = Any
"""A ``pandas.DataFrame``, a ``polars.DataFrame`` or a ``pyarrow.Table``, per ``frame``."""

Grouping: TypeAlias = Literal["shift", "hour", "day"]
API_PATH = "/api/v1"


def _base_url(url: str) -> str:
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r} (e.g. http://127.0.0.1:8080)")
    return base if base.endswith(API_PATH) else base + API_PATH


def _signals(signals: str | Sequence[str]) -> list[str]:
    items = [signals] if isinstance(signals, str) else list(signals)
    return [s.strip("/") for s in items]


class _Base:
    """What both clients share: the settings and the frame conversion."""

    def __init__(
        self, url: str, token: str, frame: FrameKind, page_size: int | None, timeout: float
    ) -> None:
        self.base_url = _base_url(url)
        """The API's base URL, ending in ``/api/v1``."""
        self.frame: FrameKind = check_frame(frame)
        """The default kind of frame returned."""
        self.page_size = page_size
        """Items per page asked of paged routes (``None``: the server's default)."""
        self._token = token
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": f"shopfloor-sdk/{__version__}",
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _frame(self, table: pa.Table, frame: FrameKind | None) -> DataFrame:
        return to_frame(table, self.frame if frame is None else check_frame(frame))

    @staticmethod
    def _request(http: httpx.Client | httpx.AsyncClient, req: Request) -> httpx.Request:
        return http.build_request(
            req.method,
            req.path.lstrip("/"),
            params=tuple(req.params),
            headers={"Accept": req.accept},
        )


class Client(_Base):
    """A blocking client of the shopfloor API.

    ``url`` is the server (``http://127.0.0.1:8080``, with or without ``/api/v1``) and
    ``token`` an API token (``shopfloor token create``; ``read`` is enough for every call
    here). Calls return pandas DataFrames, or what ``frame`` says (``"polars"``,
    ``"arrow"``), per client or per call. Errors the server answers raise
    :class:`~shopfloor.sdk.ApiError` carrying its RFC 9457 problem; an unreachable server
    raises :class:`~shopfloor.sdk.TransportError`. Use it as a context manager, or
    :meth:`close` it.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        frame: FrameKind = "pandas",
        page_size: int | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, frame, page_size, timeout)
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers=self._headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _run(self, plan: Plan[_T]) -> _T:
        try:
            req = next(plan)
            while True:
                try:
                    response = self._http.send(self._request(self._http, req))
                except httpx.TransportError as exc:
                    raise TransportError(f"{req.method} {self.base_url}{req.path}: {exc}") from exc
                req = plan.send(response)
        except StopIteration as done:
            result: _T = done.value
            return result

    def history(
        self,
        signals: str | Sequence[str],
        since: TimeLike,
        until: TimeLike,
        bucket: str | timedelta | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """History of one or more signals over ``[since, until)``, in long format.

        Raw: columns ``signal, ts, quality, value`` (``value`` of the signals' shared type:
        float64 for a mix of numbers, text otherwise). With ``bucket`` (``"1m"``,
        ``"PT15M"``, a ``timedelta``): ``signal, bucket, first, last, min, max, avg,
        count``, one row per non-empty bucket. Times are UTC.
        """
        plan = history_plan(_signals(signals), since, until, bucket, self.page_size)
        return self._frame(self._run(plan), frame)

    def latest(
        self, signals: str | Sequence[str] | None = None, *, frame: FrameKind | None = None
    ) -> DataFrame:
        """The newest sample of each signal (every signal the token sees when ``None``):
        ``signal, data_type, ts, quality, value``."""
        names = None if signals is None else _signals(signals)
        return self._frame(self._run(latest_plan(names, self.page_size)), frame)

    def oee(
        self,
        asset: str,
        since: TimeLike,
        until: TimeLike,
        by: Grouping | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """OEE (ISO 22400-2) of an asset: one row, or one per ``shift``/``hour``/``day``.

        Columns ``window_start, window_end, shift, asset, planned_busy_time_s,
        actual_production_time_s, availability, performance, quality, oee, good, reject,
        produced, ideal_cycle_time_s``.
        """
        return self.kpi("oee", asset, since, until, by, frame=frame)

    def kpi(
        self,
        kpi: Literal["oee", "losses", "iso22400"],
        asset: str,
        since: TimeLike,
        until: TimeLike,
        by: Grouping | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """Any KPI table of the API: ``oee``, ``losses`` (six big losses) or ``iso22400``."""
        plan = kpi_plan(kpi, asset.strip("/"), since, until, by, self.page_size)
        return self._frame(self._run(plan), frame)

    def events(
        self,
        asset: str | None = None,
        kind: str | Sequence[str] | None = None,
        *,
        since: TimeLike,
        until: TimeLike,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """Events overlapping ``[since, until)``, oldest first: ``event_id, kind, asset,
        signal, ts, end_ts, code, severity, message, data`` (``data`` is JSON text)."""
        kinds = [kind] if isinstance(kind, str) else kind
        plan = events_plan(asset, kinds, since, until, self.page_size)
        return self._frame(self._run(plan), frame)


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same calls, awaited, plus :meth:`live`.

    Use it as an async context manager, or :meth:`aclose` it.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        frame: FrameKind = "pandas",
        page_size: int | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, frame, page_size, timeout)
        self._verify = verify
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=self._headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _run(self, plan: Plan[_T]) -> _T:
        try:
            req = next(plan)
            while True:
                try:
                    response = await self._http.send(self._request(self._http, req))
                except httpx.TransportError as exc:
                    raise TransportError(f"{req.method} {self.base_url}{req.path}: {exc}") from exc
                req = plan.send(response)
        except StopIteration as done:
            result: _T = done.value
            return result

    async def history(
        self,
        signals: str | Sequence[str],
        since: TimeLike,
        until: TimeLike,
        bucket: str | timedelta | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """See :meth:`Client.history`."""
        plan = history_plan(_signals(signals), since, until, bucket, self.page_size)
        return self._frame(await self._run(plan), frame)

    async def latest(
        self, signals: str | Sequence[str] | None = None, *, frame: FrameKind | None = None
    ) -> DataFrame:
        """See :meth:`Client.latest`."""
        names = None if signals is None else _signals(signals)
        return self._frame(await self._run(latest_plan(names, self.page_size)), frame)

    async def oee(
        self,
        asset: str,
        since: TimeLike,
        until: TimeLike,
        by: Grouping | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """See :meth:`Client.oee`."""
        return await self.kpi("oee", asset, since, until, by, frame=frame)

    async def kpi(
        self,
        kpi: Literal["oee", "losses", "iso22400"],
        asset: str,
        since: TimeLike,
        until: TimeLike,
        by: Grouping | None = None,
        *,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """See :meth:`Client.kpi`."""
        plan = kpi_plan(kpi, asset.strip("/"), since, until, by, self.page_size)
        return self._frame(await self._run(plan), frame)

    async def events(
        self,
        asset: str | None = None,
        kind: str | Sequence[str] | None = None,
        *,
        since: TimeLike,
        until: TimeLike,
        frame: FrameKind | None = None,
    ) -> DataFrame:
        """See :meth:`Client.events`."""
        kinds = [kind] if isinstance(kind, str) else kind
        plan = events_plan(asset, kinds, since, until, self.page_size)
        return self._frame(await self._run(plan), frame)

    def live(
        self,
        patterns: str | Sequence[str],
        *,
        frame: FrameKind | None = None,
        open_timeout: float = 10.0,
    ) -> AsyncIterator[DataFrame]:
        """Values as they arrive, one frame per message of the server's live stream.

        ``patterns`` are signal paths where ``+`` matches one segment and ``**`` (or a final
        ``#``) any number. Each frame has the columns ``signal, ts, value, unit, quality``
        (``ts`` the value's own time, UTC; ``quality`` ``good``/``uncertain``/``bad``).
        A pattern outside the token's subtrees raises :class:`~shopfloor.sdk.ApiError`
        (403); a server that drops this client for reading too slowly raises
        :class:`~shopfloor.sdk.LiveError`. Leaving the loop closes the stream::

            async for frame in client.live(["acme/munich/**/temperature"]):
                ...
        """
        from shopfloor.sdk._live import live_frames

        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        kind = self.frame if frame is None else check_frame(frame)
        return live_frames(
            self.base_url, self._token, pats, kind, self._verify, open_timeout, self._headers
        )
