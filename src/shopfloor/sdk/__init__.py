"""The Python SDK: the shopfloor API as pandas (or polars, or Arrow) data frames.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) take the server's URL and an
API token::

    import shopfloor

    with shopfloor.Client("http://127.0.0.1:8080", token) as api:
        temps = api.history("acme/munich/body-shop/line-1/cell-1/press-7/temperature",
                            since="-1h", until="now", bucket="1m")
        oee = api.oee("acme/munich/body-shop/line-1", since="-1d", until="now", by="hour")

``history``, ``latest``, ``oee`` (and ``kpi``) and ``events`` return pandas DataFrames by
default, polars ones with ``frame="polars"``, Arrow tables with ``frame="arrow"``. Histories
and events travel as Parquet; paged lists are followed to their end. A server's error
raises :class:`ApiError` carrying its RFC 9457 problem (:class:`ProblemDetails`).
:meth:`AsyncClient.live` iterates over the live WebSocket stream, one frame per message.
pandas and polars come with the ``sdk`` extra: ``pip install 'shopfloor[sdk]'``.
"""

from __future__ import annotations

from shopfloor.sdk._client import AsyncClient, Client
from shopfloor.sdk._errors import ApiError, ClientError, LiveError, ProblemDetails, TransportError
from shopfloor.sdk._frames import FrameKind
from shopfloor.sdk._live import values_table
from shopfloor.sdk._plans import TimeLike

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "FrameKind",
    "LiveError",
    "ProblemDetails",
    "TimeLike",
    "TransportError",
    "values_table",
]
