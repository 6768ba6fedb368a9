"""Where an export puts its files: Hive-style partitions by UTC day and asset.

``<out>/<table>/day=<YYYY-MM-DD>/asset=<asset partition>/part-0.<parquet|csv>``

The **asset partition** is the asset path made safe as one file name on every file system:
``/`` becomes ``~`` (a character asset ids never contain), every character but ASCII
letters, digits, ``_``, ``.`` and ``-`` becomes ``%XX`` (its UTF-8 bytes, as in URLs), and
a result longer than :data:`MAX_PARTITION` characters is cut and ends in ``~`` and the
first 12 hex digits of the path's SHA-256 (still unique). Paths of a valid factory file
(segments of letters, digits, ``_``, ``.``, ``-``) therefore map one to one and readably:
``acme/munich/body-shop/line-1`` → ``acme~munich~body-shop~line-1``. The real path is in
every row's ``asset_path`` column, and ``dictionary.json`` lists each asset's partition.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

__all__ = ["MAX_PARTITION", "asset_partition", "day_partition", "partition_dir"]

MAX_PARTITION: Final = 120
"""The longest asset partition name (file systems allow 255 bytes per name)."""

_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def asset_partition(asset_path: str) -> str:
    """The filesystem-safe partition value of ``asset_path`` (see the module docs)."""
    out = []
    for ch in asset_path.strip("/"):
        if ch == "/":
            out.append("~")
        elif ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    text = "".join(out) or "%00"
    if text in (".", ".."):
        text = text.replace(".", "%2E")
    if len(text) > MAX_PARTITION:
        digest = hashlib.sha256(asset_path.encode()).hexdigest()[:12]
        cut = text[: MAX_PARTITION - 13]
        escape = cut.rfind("%", len(cut) - 2)  # never cut an %XX escape in two
        text = (cut if escape < 0 else cut[:escape]) + "~" + digest
    return text


def day_partition(day: date | datetime) -> str:
    """``YYYY-MM-DD`` of a date, or of a datetime's UTC day."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date()
    return day.isoformat()


def partition_dir(out: Path, table: str, day: date | datetime, asset_path: str) -> Path:
    """The folder of one table's files for one UTC day and one asset."""
    return out / table / f"day={day_partition(day)}" / f"asset={asset_partition(asset_path)}"
