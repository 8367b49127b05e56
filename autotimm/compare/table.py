"""The ranked table printed to the terminal (rich)."""

from __future__ import annotations

import math
from typing import Any

from autotimm.records.runs import Run, short_key, swept_keys

# completed rows plain; failed ones red, pruned dim (stopped on purpose), the rest yellow
STYLES = {"completed": None, "failed": "red", "pruned": "dim"}


def fmt(value: Any) -> str:
    """A cell: `-` for missing, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _metric_columns(table: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The objective's name and the headline metrics shown next to it."""
    objective = next((r["objective_name"] for r in table if r["objective_name"]), "objective")
    headline = [n for n in ("val/loss",) if any(n in r for r in table)]
    tests = [n for n in (objective.replace("val/", "test/", 1), "test/loss") if n != objective]
    tests = [n for n in tests if any(r.get(n) is not None for r in table)]
    return objective, headline + tests


def _cells(row: dict[str, Any], keys: list[str], metrics: list[str], front: bool) -> list[str]:
    seconds = row.get("wall_time_s")
    return [
        fmt(row["rank"]),
        row["trial"],
        *(fmt(row.get(k)) for k in keys),
        fmt(row["objective"]),
        *(["front" if row.get("pareto") else "-"] if front else []),
        *(fmt(row.get(n)) for n in metrics),
        fmt(row.get("epochs")),
        f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-",
        fmt(row.get("gpu")) if row.get("gpu") is not None else (row.get("device") or "-"),
        row["status"],
    ]


def print_table(runs: list[Run], table: list[dict[str, Any]], title: str) -> None:
    """Print the rows (swept values as columns), then each failed run's reason.

    Rows of a multi-objective study carry `pareto`: a column marks the front's trials."""
    from rich.console import Console
    from rich.table import Table

    keys = swept_keys(runs)
    objective, metrics = _metric_columns(table)
    grid = Table(title=title, title_justify="left")
    grid.add_column("#", justify="right")
    grid.add_column("trial", overflow="fold")
    for key in keys:
        grid.add_column(short_key(key), justify="right")
    grid.add_column(objective, justify="right", style="bold")
    front = any("pareto" in row for row in table)
    if front:
        grid.add_column("pareto", style="bold green")
    for name in metrics:
        grid.add_column(name, justify="right")
    for name in ("epochs", "time", "GPU", "status"):
        grid.add_column(name, justify="right" if name in ("epochs", "time") else "left")
    for row in table:
        grid.add_row(*_cells(row, keys, metrics, front), style=STYLES.get(row["status"], "yellow"))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and CI: no squeezed columns
    console.print(grid)
    for row in table:
        if row.get("failure"):
            console.print(f"[red]trial {row['trial']} {row['status']}:[/] {row['failure']}")
