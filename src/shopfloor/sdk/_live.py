"""The live stream (``GET /api/v1/live``, a WebSocket) as an async iterator of frames.

The server sends JSON messages: ``hello``, ``subscribed``, columnar ``values`` frames
(parallel arrays ``signal, ts, value, unit, quality``; ``ts`` in epoch milliseconds),
``events``, ``error`` (a refused subscription), ``dropped`` (just before it closes a slow
client with code 1013) and ``pong``. Close code 4401 (or a refused handshake) means the
token was not accepted.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import pyarrow as pa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from shopfloor.sdk._errors import ApiError, LiveError, ProblemDetails, TransportError
from shopfloor.sdk._frames import FrameKind, to_frame
from shopfloor.sdk._plans import shared_values

__all__ = ["live_frames", "values_table"]

_UNAUTHORIZED: Final = 4401
_SLOW_CONSUMER: Final = 1013
_MS_TS: Final = pa.timestamp("ms", tz="UTC")
_US_TS: Final = pa.timestamp("us", tz="UTC")


def values_table(message: Mapping[str, Any]) -> pa.Table:
    """A ``values`` message as an Arrow table ``signal, ts, value, unit, quality``."""
    return pa.table(
        {
            "signal": pa.array(message["signal"], pa.string()),
            "ts": pa.array(message["ts"], pa.int64()).cast(_MS_TS).cast(_US_TS),
            "value": shared_values(message["value"]),
            "unit": pa.array(message["unit"], pa.string()),
            "quality": pa.array(message["quality"], pa.string()),
        }
    )


def _ws_url(base_url: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/live"


def _ssl(url: str, verify: bool | str) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=verify)


def _problem(status: int, title: str, detail: str, slug: str) -> ProblemDetails:
    return ProblemDetails(f"/api/v1/problems/{slug}", title, status, detail)


async def live_frames(
    base_url: str,
    token: str,
    patterns: list[str],
    frame: FrameKind,
    verify: bool | str,
    open_timeout: float,
    headers: Mapping[str, str],
) -> AsyncIterator[Any]:
    """Subscribe to ``patterns`` and yield one frame per ``values`` message (see module)."""
    url = _ws_url(base_url)
    dropped = 0
    try:
        async with connect(
            url,
            additional_headers=dict(headers),
            ssl=_ssl(url, verify),
            open_timeout=open_timeout,
            max_size=2**26,
        ) as ws:
            await ws.send(json.dumps({"type": "subscribe", "id": "sdk", "patterns": patterns}))
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "values":
                    yield to_frame(values_table(message), frame)
                elif kind == "error":
                    status = int(message.get("code") or 400)
                    slug = "outside-subtree" if status == 403 else "invalid-request"
                    raise ApiError(
                        _problem(status, "Live subscription refused", str(message["detail"]), slug),
                        "GET",
                        url,
                    )
                elif kind == "dropped":
                    dropped += int(message.get("values_dropped") or 0)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == _UNAUTHORIZED:
            raise ApiError(
                _problem(
                    401, "Authentication required", "the token was not accepted", "unauthorized"
                ),
                "GET",
                url,
            ) from exc
        if code == _SLOW_CONSUMER:
            raise LiveError(
                f"the server dropped this client as a slow consumer ({dropped} values dropped)",
                code=code,
                dropped=dropped,
            ) from exc
        if code not in (1000, 1001):
            raise LiveError(f"the live stream at {url} closed: {exc}", code=code) from exc
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = exc.response.body or b""
        try:
            decoded: Any = json.loads(body) if body else None
        except ValueError:
            decoded = body.decode(errors="replace")
        if status in (401, 403) and not isinstance(decoded, dict):
            decoded = {"type": "/api/v1/problems/unauthorized", "title": "Authentication required",
                       "status": 401, "detail": "the live stream refused the token"}  # fmt: skip
        raise ApiError(ProblemDetails.from_json(decoded, status), "GET", url) from exc
    except (OSError, TimeoutError, InvalidURI, WebSocketException) as exc:
        raise TransportError(f"live stream at {url}: {exc}") from exc
