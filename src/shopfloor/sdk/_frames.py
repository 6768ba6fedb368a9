"""Arrow tables as the data frames a caller asked for: pandas, polars or Arrow itself.

pandas and polars are optional (``pip install 'shopfloor[sdk]'``); a missing one is a
clear :class:`ImportError` naming the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, TypeAlias

import pyarrow as pa

__all__ = ["FrameKind", "check_frame", "to_frame"]

FrameKind: TypeAlias = Literal["pandas", "polars", "arrow"]
"""What the SDK returns: a ``pandas.DataFrame``, a ``polars.DataFrame`` or a ``pyarrow.Table``."""

_KINDS = ("pandas", "polars", "arrow")


def check_frame(frame: str) -> FrameKind:
    """``frame`` when it is one of the kinds, else :class:`ValueError`."""
    if frame not in _KINDS:
        raise ValueError(f"frame={frame!r}: use one of {', '.join(map(repr, _KINDS))}")
    return frame  # type: ignore[return-value]


def to_frame(table: pa.Table, frame: FrameKind) -> Any:
    """``table`` as a pandas or polars DataFrame (timestamps stay UTC-aware), or as is."""
    if frame == "arrow":
        return table
    if frame == "polars":
        try:
            import polars as pl
        except ImportError as exc:
            raise ImportError(
                "frame='polars' needs polars: pip install 'shopfloor[sdk]' (or polars)"
            ) from exc
        return pl.from_arrow(table, rechunk=False)
    if importlib.util.find_spec("pandas") is None:
        raise ImportError(
            "frame='pandas' needs pandas: pip install 'shopfloor[sdk]' (or pandas), or pass "
            "frame='arrow'"
        )
    return table.to_pandas()
