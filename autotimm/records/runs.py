"""Finding the runs below a folder and the values they were swept over.

A run is a folder holding a run record (`autotimm.records.results`), or a `.hydra/` record
without one: a run that was killed or is still going. Records are read only through
`autotimm.records.results.read_record`; one that cannot be read shows as "unreadable".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotimm.records.results import RecordError, RunRecord, has_record, read_record

SKIP_DIRS = {"wandb", "checkpoints", ".submitit", "tensorboard", ".gpu_locks", ".hydra"}
# overrides that differ between runs without being part of the comparison (the trial
# wrapper injects sweep.trial, Hydra's sweeper hydra.sweep.subdir, each run its paths)
NOT_SWEPT = ("sweep.", "hydra.", "paths.", "ckpt_path", "print_config")


@dataclass
class Run:
    """One run folder: its record (None: never written or unreadable) and swept values."""

    run_dir: Path
    record: RunRecord | None
    overrides: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    unreadable: bool = False

    @property
    def status(self) -> str:
        if self.record is not None:
            return self.record.status
        return "unreadable" if self.unreadable else "incomplete"

    @property
    def objective_name(self) -> str | None:
        return self.record.objective.name if self.record else None

    @property
    def mode(self) -> str:
        return (self.record.objective.mode if self.record else None) or "max"

    def mode_of(self, metric: str | None) -> str:
        """The direction of `metric`: the objective's mode when it is an objective of the run,
        else `min` for losses, errors and `model/` costs and `max` for the rest (scores)."""
        if metric is None or metric in (self.objective_name, "objective"):
            return self.mode
        for objective in self.record.objectives if self.record else []:
            if objective.name == metric and objective.mode:
                return objective.mode
        last = metric.rsplit("/", 1)[-1]
        return "min" if last.endswith(("loss", "error")) or metric.startswith("model/") else "max"

    @property
    def trial(self) -> str:
        sweep = self.record.sweep if self.record else None
        number = sweep.trial if sweep and sweep.trial is not None else None
        if number is None:
            number = self.overrides.get("sweep.trial")
        return str(number) if number is not None else self.run_dir.name

    def section(self, name: str) -> dict[str, Any]:
        """The record's `val` or `test` metrics ({} for anything else)."""
        if self.record is None or name not in ("val", "test"):
            return {}
        return getattr(self.record, name) or {}

    def metric(self, name: str | None) -> float | None:
        """A finite metric value; the objective falls back to the pruned value."""
        if name is None or self.record is None:
            return None
        if name == self.objective_name or name == "objective":
            value = self.record.objective.value
            if value is None and self.record.pruned is not None:
                value = self.record.pruned.value
        else:
            value = self.section(name.split("/", 1)[0]).get(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None


def _parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            parsed[key.lstrip("+~")] = value
    return parsed


def _typed(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _hydra_overrides(run_dir: Path) -> list[str]:
    try:
        return yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        return []


def load_run(run_dir: Path) -> Run:
    """The run in `run_dir`: its record, overrides and the sweep's values for it."""
    try:
        record, unreadable = read_record(run_dir), False
    except RecordError:
        record, unreadable = None, True
    # a record without overrides (or none at all): Hydra's own record of the command line
    lines = record.overrides if record is not None and record.overrides else None
    run = Run(run_dir, record, _parse_overrides(lines or _hydra_overrides(run_dir)))
    run.unreadable = unreadable
    if record is not None and record.sweep is not None:
        run.params = dict(record.sweep.params or {})
    return run


def find_runs(root: Path) -> list[Run]:
    """Every run below root (a run record, or a .hydra record of a run that never finished)."""
    runs = []
    for here, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        run_dir = Path(here)
        recorded = has_record(run_dir)
        if not recorded and not (run_dir / ".hydra" / "overrides.yaml").is_file():
            continue
        if run_dir == root and not recorded and dirs:
            continue  # the sweep folder itself (Hydra may leave a .hydra there)
        runs.append(load_run(run_dir))
    _fill_swept(runs)
    return runs


def _fill_swept(runs: list[Run]) -> None:
    """Add the overrides whose value differs between runs to each run's params."""
    keys = sorted({k for run in runs for k in run.overrides})
    varying = [  # runs that do not set a key ran with its default: unknown, not compared
        k
        for k in keys
        if not k.startswith(NOT_SWEPT)
        and len({run.overrides[k] for run in runs if k in run.overrides}) > 1
    ]
    for run in runs:
        for key in varying:
            if key not in run.params and key in run.overrides:
                run.params[key] = _typed(run.overrides[key])


def swept_keys(runs: list[Run]) -> list[str]:
    """The swept keys of all runs, in the order they first appear."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    return keys


def short_key(key: str) -> str:
    """`optimizer.lr` -> `lr`, for column and panel titles."""
    return key.split(".")[-1]
