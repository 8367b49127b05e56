"""The flat, ranked rows of a comparison: one per run, every metric (the CSV's rows)."""

from __future__ import annotations

from typing import Any

from autotimm.records.ranking import rank
from autotimm.records.runs import Run, swept_keys


def _metric_names(runs: list[Run], section: str) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [k for k in run.section(section) if k not in names]
    return names


def _record_columns(run: Run) -> dict[str, Any]:
    """The record's scalar columns (all None for a run without a readable record)."""
    record = run.record
    names = ("epochs", "best_epoch", "wall_time_s", "train_images_per_s", "device", "gpu")
    columns = {name: getattr(record, name) if record else None for name in names}
    columns["failure"] = record.failure if record else None
    return columns


def rows(runs: list[Run], metric: str | None = None) -> list[dict[str, Any]]:
    """One flat row per run, ranked; only completed runs get a rank number."""
    keys = swept_keys(runs)
    names = _metric_names(runs, "val") + _metric_names(runs, "test")
    table = []
    for position, run in enumerate(rank(runs, metric), start=1):
        row: dict[str, Any] = {
            "rank": position if run.status == "completed" else None,
            "trial": run.trial,
            "status": run.status,
            "objective_name": run.objective_name,
            "objective": run.metric(run.objective_name),
        }
        row.update({key: run.params.get(key) for key in keys})
        row.update({name: run.metric(name) for name in names})
        row.update(_record_columns(run), run_dir=str(run.run_dir))
        table.append(row)
    return table
