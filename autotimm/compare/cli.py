"""`compare()` (the whole comparison) and the `python -m autotimm.compare` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from autotimm.compare.best_config import write_best_config
from autotimm.compare.csv_out import CSV_FILE, write_csv
from autotimm.compare.plots import PNG_FILE, plot
from autotimm.compare.ranking import rank
from autotimm.compare.rows import rows
from autotimm.compare.runs import Run, find_runs
from autotimm.compare.table import print_table
from autotimm.results import RESULTS_FILE

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"


def _title(root: Path, runs: list[Run]) -> str:
    completed = sum(r.status == "completed" for r in runs)
    pruned = sum(r.status == "pruned" for r in runs)
    return (
        f"{root}: {len(runs)} runs, {completed} completed, "
        + (f"{pruned} pruned, " if pruned else "")
        + f"{len(runs) - completed - pruned} failed or unfinished"
    )


def _write_best(runs: list[Run], metric: str | None, target: Path, show: bool) -> Path | None:
    """best_config.yaml from the best completed run (none: no completed run)."""
    ranked = [r for r in rank(runs, metric) if r.status == "completed"]
    if not ranked:
        return None
    path = write_best_config(ranked[0], target, TRAIN_PY)
    if path is not None and show:
        print(
            f"best: trial {ranked[0].trial} -> {path}\n"
            f"re-run: python {TRAIN_PY} --config-dir {target} --config-name best_config"
        )
    return path


def compare(
    folder: str | Path,
    metric: str | None = None,
    out: str | Path | None = None,
    make_plot: bool = True,
    show: bool = True,
) -> dict[str, Any]:
    """Table, compare.csv, compare.png and best_config.yaml for the runs below `folder`."""
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
    written = {"csv": write_csv(table, target / CSV_FILE)}
    if show:
        print_table(runs, table, _title(root, runs))
    if make_plot:
        written["png"] = plot(runs, target / PNG_FILE, metric)
    best_path = _write_best(runs, metric, target, show)
    if best_path is not None:
        written["best_config"] = best_path
    if show:
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return {"runs": runs, "rows": table, "files": written}


def main(argv: list[str] | None = None) -> int:
    """The command line; 1 (with the reason on stderr) when there is nothing to compare."""
    parser = argparse.ArgumentParser(
        prog="python -m autotimm.compare",
        description="Rank the runs of a sweep (or any folder of runs): table, CSV, PNG, "
        "and the best run's config.",
    )
    parser.add_argument("folder", help="a sweep folder (outputs/sweeps/<name>) or any runs folder")
    parser.add_argument("--metric", help="rank by this metric (default: each run's objective)")
    parser.add_argument("--out", help="write compare.csv / compare.png / best_config.yaml here")
    parser.add_argument("--no-plot", action="store_true", help="skip compare.png")
    args = parser.parse_args(argv)
    try:
        compare(args.folder, metric=args.metric, out=args.out, make_plot=not args.no_plot)
    except FileNotFoundError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0
