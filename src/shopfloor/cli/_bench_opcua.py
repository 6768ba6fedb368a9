"""``shopfloor bench opcua``: OPC UA connector throughput (see :mod:`shopfloor.bench.opcua`)."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["register"]

console = Console(stderr=True)


def _write(doc: dict[str, Any], path: Path | None) -> None:
    try:  # the shared report helper, when it is there
        _report: Any = importlib.import_module("shopfloor.bench._report")
    except ImportError:
        _report = None
    if path is not None:
        if _report is not None and hasattr(_report, "write_report"):
            _report.write_report(path, doc)
        else:
            path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def opcua_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    items: int = typer.Option(1000, "--items", help="Monitored items (1 Hz each)."),
    seconds: float = typer.Option(10.0, "--seconds", help="Measurement time per step."),
    ramp: bool = typer.Option(
        False, "--ramp", help="Ramp 1000, 2500, 5000, 10000, 20000 items; stop at the first miss."
    ),
) -> None:
    """How many 1 Hz OPC UA monitored items one connector keeps up with, and its CPU."""
    from shopfloor.bench.opcua import DEFAULT_RAMP, report, run_opcua_ramp

    sizes = list(DEFAULT_RAMP) if ramp else [items]
    results = asyncio.run(run_opcua_ramp(sizes, seconds))
    doc = report(results)
    table = Table(title="OPC UA connector")
    for col in (
        "items",
        "values/s",
        "expected/s",
        "keeping up",
        "lag p50 ms",
        "lag p99 ms",
        "CPU % / 1000 items",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r.items:,}",
            f"{r.values_per_s:,.0f}",
            f"{r.expected_values_per_s:,.0f}",
            "yes" if r.keeping_up else "[red]no[/]",
            f"{r.lag_p50_ms:,.0f}",
            f"{r.lag_p99_ms:,.0f}",
            f"{r.cpu_percent_per_1000_items:.2f}",
        )
    console.print(table)
    console.print(f"largest N keeping up: {doc['max_items_keeping_up']:,}")
    _write(doc, json_out)


def register(bench_app: typer.Typer) -> None:
    """Add the ``opcua`` command to the ``bench`` app."""
    bench_app.command("opcua")(opcua_command)
