"""Shared reporting for the benchmarks: JSON files with machine info, rich tables."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["machine_info", "print_figures", "write_report"]


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: CPU count, platform, Python."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
    }


def write_report(
    path: str | os.PathLike[str],
    name: str | Mapping[str, Any],
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``figures`` as JSON to ``path`` with the benchmark ``name``, machine and time.

    The figures stay at the top level (so ``doc["append_rows_per_s"]`` works); ``bench``,
    ``timestamp`` and ``machine`` are added unless the figures already have them. Also
    accepts ``write_report(path, figures)``, the name then taken from ``figures["bench"]``.
    Returns the document written.
    """
    if figures is None:
        if isinstance(name, str):
            raise TypeError("write_report(path, name, figures): figures missing")
        figures, name = name, str(name.get("bench", "bench"))
    elif not isinstance(name, str):
        raise TypeError("write_report(path, name, figures): name must be a string")
    doc: dict[str, Any] = {
        "bench": name,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    doc.update(figures)
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return doc


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "[green]yes[/]" if value else "[red]no[/]"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def print_figures(
    title: str, figures: Mapping[str, Any], *, console: Console | None = None
) -> None:
    """Print ``figures`` as a two-column rich table (to stderr unless a console is given)."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, _fmt(value))
    (console or Console(stderr=True)).print(table)
