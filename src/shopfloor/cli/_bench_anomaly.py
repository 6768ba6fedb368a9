"""``shopfloor bench anomaly``: injected faults, precision and recall, throughput
(see :mod:`shopfloor.bench.anomaly`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["anomaly_command", "register"]

console = Console(stderr=True)


def _kinds_table(figures: dict[str, Any]) -> Table:
    table = Table(title="per fault kind")
    for col in ("kind", "faults", "detected", "recall", "median delay s", "baseline recall"):
        table.add_column(col, justify="right")
    base = figures["baseline"]["recall_per_kind"]
    for kind, row in figures["per_kind"].items():
        table.add_row(
            kind,
            f"{row['faults']:,}",
            f"{row['detected']:,}",
            "–" if row["recall"] is None else f"{row['recall']:.3f}",
            "–" if row["median_delay_s"] is None else f"{row['median_delay_s']:,.1f}",
            "–" if base.get(kind) is None else f"{base[kind]:.3f}",
        )
    return table


def anomaly_command(
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON here."),
    stations: int = typer.Option(
        50, "--stations", min=1, help="Simulated presses (4 signals each)."
    ),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="Simulated hours at 1 Hz."),
    rate: float = typer.Option(
        0.25, "--faults-per-hour", min=0.0, help="Mean injected faults per signal and hour."
    ),
    batch_s: float = typer.Option(10.0, "--batch-s", min=1.0, help="Simulated seconds per batch."),
    tolerance_s: float = typer.Option(60.0, "--tolerance-s", min=0.0, help="Matching tolerance."),
    window: int = typer.Option(300, "--window", help="Detector window (samples)."),
    threshold: float = typer.Option(6.0, "--threshold", help="Detector threshold (robust z)."),
    refresh: int = typer.Option(10, "--refresh", help="Recompute the reference every N samples."),
    stuck: int = typer.Option(30, "--stuck-samples", help="Stuck after N equal values (0: off)."),
    scale_from: str = typer.Option(
        "values", "--scale-from", help="Detector scale from 'values' or 'differences'."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the simulation and the faults."),
    natural_stops: bool = typer.Option(
        False,
        "--natural-stops",
        help="Let the presses fail, wait and stop as they normally do (their state changes "
        "move the measurements: false alarms unless the gate keeps them from being scored).",
    ),
    gate: bool = typer.Option(
        True,
        "--gate/--no-gate",
        help="Give the detector each press's state signal and state map, so that it scores a "
        "press only while running (and --settle-s after it started); --no-gate scores "
        "whatever the state.",
    ),
    settle_s: float = typer.Option(
        60.0, "--settle-s", help="Seconds after a start before a press is scored (with the gate)."
    ),
    drift_after_s: float | None = typer.Option(
        None,
        "--drift-after-s",
        help="Add the drift check once a press has been running this many seconds (default: off).",
    ),
) -> None:
    """Sensor faults injected into the simulator, streamed through the anomaly detector:
    event-level precision and recall (per fault kind) and samples/s against a plain NumPy
    rolling z-score over the same arrays."""
    from shopfloor.bench._report import print_figures, write_report
    from shopfloor.bench.anomaly import AnomalyBenchConfig, run_anomaly_bench
    from shopfloor.model import AnomalyParams

    try:
        params = AnomalyParams.model_validate(
            {
                "window": window,
                "threshold": threshold,
                "refresh": refresh,
                "stuck_samples": stuck or None,
                "scale_from": scale_from,
                "settle_s": settle_s,
                "drift_after_s": drift_after_s,
            }
        )
        cfg = AnomalyBenchConfig(
            stations=stations,
            hours=hours,
            faults_per_signal_hour=rate,
            batch_s=batch_s,
            tolerance_s=tolerance_s,
            seed=seed,
            natural_stops=natural_stops,
            params=params,
            gate=gate,
        )
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from exc
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: float, total: float) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        figures = run_anomaly_bench(cfg, progress)
    shown = {k: v for k, v in figures.items() if k not in ("per_kind", "params", "baseline")}
    shown["baseline precision"] = figures["baseline"]["precision"]
    shown["baseline recall"] = figures["baseline"]["recall"]
    print_figures("anomaly detection", shown, console=console)
    console.print(_kinds_table(figures))
    if json_out is not None:
        write_report(json_out, "anomaly", figures)
        console.print(f"wrote {json_out}")


def register(bench_app: typer.Typer) -> None:
    """Add the ``anomaly`` command to the ``bench`` app."""
    bench_app.command("anomaly")(anomaly_command)
