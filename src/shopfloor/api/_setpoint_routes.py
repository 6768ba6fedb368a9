"""Setpoint writes: validated against the model, delivered by the connector of the binding."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request

from shopfloor.api._auth import Scope, TokenInfo
from shopfloor.api._deps import Ctx, check_path, require
from shopfloor.api._problems import ProblemError, problem_responses
from shopfloor.api._schemas import SetpointIn, SetpointOut
from shopfloor.errors import ConnectorError
from shopfloor.model import ResolvedSignal

__all__ = ["WRITE_TIMEOUT_S", "check_setpoint", "router"]

router = APIRouter(tags=["setpoints"], responses=problem_responses(401, 403, 404, 422, 502, 503))

Operator = Annotated[TokenInfo, Depends(require(Scope.operate))]

WRITE_TIMEOUT_S: Final = 10.0
"""How long a connector may take to deliver a write before the request fails (502)."""


def _reject(path: str, why: str) -> ProblemError:
    return ProblemError("setpoint-rejected", f"{path}: {why}")


def check_setpoint(signal: ResolvedSignal, value: Any) -> Any:
    """``value`` as the signal's data type, or a ``setpoint-rejected`` problem saying why.

    Floats take JSON numbers (not booleans), ints integral numbers, bools ``true``/``false``,
    strings strings, ``json`` any JSON value; numbers must lie within the signal's limits.
    """
    path = signal.path
    if signal.kind != "setpoint":
        raise _reject(path, f"it is a {signal.kind} signal, not a setpoint")
    if signal.derived or signal.binding is None:
        raise _reject(path, "it is not bound to a device, so there is nothing to write to")
    dt = signal.data_type
    if dt == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _reject(path, f"expected a number (float), got {value!r}")
        out: Any = float(value)
        if not math.isfinite(out):
            raise _reject(path, f"expected a finite number, got {value!r}")
    elif dt == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _reject(path, f"expected an integer, got {value!r}")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise _reject(path, f"expected an integer, got {value!r}")
        out = int(value)
    elif dt == "bool":
        if not isinstance(value, bool):
            raise _reject(path, f"expected true or false, got {value!r}")
        out = value
    elif dt == "string":
        if not isinstance(value, str):
            raise _reject(path, f"expected a string, got {value!r}")
        out = value
    else:  # json: any JSON value
        out = value
    if dt in ("float", "int"):
        if signal.low is not None and out < signal.low:
            raise _reject(path, f"{out} is below the signal's low limit {signal.low:g}")
        if signal.high is not None and out > signal.high:
            raise _reject(path, f"{out} is above the signal's high limit {signal.high:g}")
    return out


def _raw(signal: ResolvedSignal, value: Any) -> Any:
    """The value as the device sees it: the binding's ``raw * scale + offset`` undone."""
    b = signal.binding
    assert b is not None
    if signal.data_type not in ("float", "int") or (b.scale == 1.0 and b.offset == 0.0):
        return value
    raw = (float(value) - b.offset) / b.scale
    if signal.data_type == "int":
        nearest = round(raw)
        if abs(raw - nearest) > 1e-9 * max(1.0, abs(raw)):
            raise _reject(
                signal.path,
                f"{value} is not reachable: the device holds integers scaled by {b.scale:g}"
                + (f" with offset {b.offset:g}" if b.offset else ""),
            )
        return int(nearest)
    return raw


@router.post("/setpoints/{signal:path}", response_model=SetpointOut, summary="Write a setpoint")
async def write_setpoint(
    signal: str, body: SetpointIn, request: Request, ctx: Ctx, token: Operator
) -> SetpointOut:
    """Write a value (engineering unit) to a setpoint signal's device.

    Checked against the model first (a bound ``setpoint`` signal, its data type and limits),
    then delivered by the connector of the binding with the binding's scale and offset
    undone. A server without a runtime (``shopfloor serve`` over a historian file) answers
    503; a device that is away or refuses, 502.
    """
    path = signal.strip("/")
    check_path(token, path, "signal")
    request.state.audit_detail = {"action": "setpoint", "signal": path, "value": body.value}
    try:
        sig = ctx.factory.signal(path)
    except KeyError:
        raise ProblemError("not-found", f"no signal {path!r} in the model") from None
    value = check_setpoint(sig, body.value)
    raw = _raw(sig, value)
    b = sig.binding
    assert b is not None
    request.state.audit_detail.update(raw_value=raw, connection=b.connection, address=b.address)
    rt = ctx.runtime
    if rt is None:
        raise ProblemError(
            "runtime-unavailable",
            "this server reads a historian file and has no device connections; setpoints "
            "are written by a server inside 'shopfloor up' (--api-port)",
        )
    connector = next((c for c in rt.connectors if c.name == b.connection), None)
    if connector is None:
        why = rt.skipped.get(b.connection, "it is not running")
        raise ProblemError("runtime-unavailable", f"connection {b.connection!r}: {why}")
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await connector.write(b.address, raw)
    except ConnectorError as exc:
        raise ProblemError("device-error", str(exc)) from None
    except TimeoutError:
        raise ProblemError(
            "device-error",
            f"connection {b.connection!r}: the write to {b.address} took longer than "
            f"{WRITE_TIMEOUT_S:g} s",
        ) from None
    return SetpointOut(
        signal=path,
        value=value,
        raw_value=raw,
        connection=b.connection,
        address=b.address,
        written_at=datetime.now(UTC),
        by=token.label(),
    )
