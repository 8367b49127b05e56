"""`compare()` (the whole comparison) and the `python -m autotimm.compare` command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotimm.compare.best_config import write_best_config
from autotimm.compare.csv_out import CSV_FILE, write_csv
from autotimm.compare.folds import (
    FOLDS_CSV,
    best_fold_group,
    fold_keys,
    fold_rows,
    print_fold_table,
)
from autotimm.compare.plots import PNG_FILE, plot
from autotimm.compare.rows import rows
from autotimm.compare.study import SweepStudy, mark_front, open_study
from autotimm.compare.study_plots import study_plots
from autotimm.compare.table import print_table
from autotimm.records.ranking import rank
from autotimm.records.results import RESULTS_FILE
from autotimm.records.runs import Run, find_runs
from autotimm.user_errors import user_errors_reported

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"


def _title(root: Path, runs: list[Run]) -> str:
    completed = sum(r.status == "completed" for r in runs)
    pruned = sum(r.status == "pruned" for r in runs)
    return (
        f"{root}: {len(runs)} runs, {completed} completed, "
        + (f"{pruned} pruned, " if pruned else "")
        + f"{len(runs) - completed - pruned} failed or unfinished"
    )


def _write_best(
    runs: list[Run], metric: str | None, target: Path, show: bool, folds: list[dict[str, Any]]
) -> Path | None:
    """best_config.yaml from the best completed run (none: no completed run); with k-fold
    runs, from the configuration with the best mean (its folds settings cleared)."""
    ranked = [r for r in rank(best_fold_group(runs, folds), metric) if r.status == "completed"]
    if not ranked:
        return None
    path = write_best_config(ranked[0], target, TRAIN_PY)
    if path is not None and show:
        print(
            f"best: trial {ranked[0].trial} -> {path}\n"
            f"re-run: python {TRAIN_PY} --config-dir {target} --config-name best_config"
        )
    return path


def _study(
    root: Path, runs: list[Run], storage: str | None, table: list[dict[str, Any]]
) -> tuple[SweepStudy | None, list[str]]:
    """The sweep's study (None: a folder of runs) and notes; marks its Pareto front."""
    objective = next((r.objective_name for r in runs if r.objective_name), None)
    sweep, note = open_study(root, storage, objective)
    if sweep is None:
        return None, [note] if note else []
    if not sweep.multi_objective:
        return sweep, []
    front = sweep.front()
    mark_front(table, front)
    return sweep, [f"Pareto front: trial(s) {', '.join(map(str, front)) or 'none'}"]


def compare(
    folder: str | Path,
    metric: str | None = None,
    out: str | Path | None = None,
    make_plot: bool = True,
    show: bool = True,
    storage: str | None = None,
) -> dict[str, Any]:
    """Table, compare.csv, compare.png, the study's Optuna plots and best_config.yaml for
    the runs below `folder` (`storage`: the study's URL when the folder's is masked); for
    k-fold runs also the mean ± std table and compare_folds.csv (`compare.folds`)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of runs")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(
            f"no runs below {root} (a run folder holds {RESULTS_FILE} or .hydra/)"
        )
    target = Path(out).expanduser().resolve() if out else root
    target.mkdir(parents=True, exist_ok=True)
    table = rows(runs, metric)
    sweep, notes = _study(root, runs, storage, table)
    written: dict[str, Any] = {"csv": write_csv(table, target / CSV_FILE)}
    folds = fold_rows(runs, metric)  # k-fold runs: one row per configuration
    if folds:
        written["folds_csv"] = write_csv(folds, target / FOLDS_CSV)
    if show:
        print_table(runs, table, _title(root, runs))
        if folds:
            print_fold_table(folds, fold_keys(runs))
    if make_plot:
        written["png"] = plot(runs, target / PNG_FILE, metric)
        if sweep is not None:
            pngs, skipped = study_plots(sweep, target)
            written.update((p.stem, p) for p in pngs)
            notes += skipped
    elif sweep is None:
        notes = []  # no plots asked for: nothing to say about missing ones
    best_path = _write_best(runs, metric, target, show, folds)
    if best_path is not None:
        written["best_config"] = best_path
    if show:
        for note in notes:
            print(note)
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return {"runs": runs, "rows": table, "folds": folds, "files": written, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    """The command line; 1 (with the reason on stderr) when there is nothing to compare."""
    parser = argparse.ArgumentParser(
        prog="python -m autotimm.compare",
        description="Rank the runs of a sweep (or any folder of runs): table, CSV, PNG, "
        "the study's Optuna plots and the best run's config.",
    )
    parser.add_argument("folder", help="a sweep folder (outputs/sweeps/<name>) or any runs folder")
    parser.add_argument(
        "--metric",
        help="rank by this metric (default: each run's objective; direction: the objective's "
        "mode, else min for losses, errors and model/ costs, max for scores)",
    )
    parser.add_argument("--out", help="write compare.csv, the PNGs and best_config.yaml here")
    parser.add_argument(
        "--storage",
        help="the study's storage URL, where optimization_results.yaml shows it masked "
        "(a password): postgresql://user:password@host/db",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="skip compare.png and the Optuna plots"
    )
    args = parser.parse_args(argv)
    with user_errors_reported(exit_process=False) as ok:
        compare(
            args.folder,
            metric=args.metric,
            out=args.out,
            make_plot=not args.no_plot,
            storage=args.storage,
        )
    return 0 if ok else 1
