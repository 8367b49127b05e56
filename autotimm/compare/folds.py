"""k-fold runs side by side: the folds of one configuration as one row, mean and std.

Runs that record a `fold` (`data.folds`/`data.fold`, sweeps/kfold.yaml) are grouped by
their swept values other than `data.fold`; each group's completed runs give the mean and
the sample standard deviation (n - 1; none for a single fold) of the objective and of every
val/test metric. The per-fold rows stay in compare.csv (their `data.fold` column);
compare_folds.csv holds these rows, ranked by the mean objective.
"""

from __future__ import annotations

import statistics
from typing import Any

from autotimm.compare.table import fmt
from autotimm.records.runs import Run, short_key, swept_keys

FOLDS_CSV = "compare_folds.csv"
FOLD_KEY = "data.fold"


def fold_runs(runs: list[Run]) -> list[Run]:
    """The runs that are one fold of a k-fold cross-validation."""
    return [r for r in runs if r.record is not None and r.record.fold is not None]


def _config_keys(runs: list[Run]) -> list[str]:
    return [k for k in swept_keys(runs) if k != FOLD_KEY]


def _key(item: Run | dict[str, Any], keys: list[str]) -> tuple[str, ...]:
    """A run's (or a table row's) values of `keys`, comparable between the two."""
    values = item.params if isinstance(item, Run) else item
    return tuple(repr(values.get(k)) for k in keys)


def _groups(runs: list[Run], keys: list[str]) -> list[list[Run]]:
    """Runs with the same values of `keys` (everything swept but the fold), first-seen order."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(_key(run, keys), []).append(run)
    return list(groups.values())


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where there are too few values)."""
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def _metric_names(runs: list[Run]) -> list[str]:
    names: list[str] = []
    for section in ("val", "test"):
        for run in runs:
            names += [k for k in run.section(section) if k not in names]
    return names


def _row(group: list[Run], keys: list[str], names: list[str], metric: str | None) -> dict:
    """One configuration: its values, how many folds completed, mean and std of each metric."""
    done = [r for r in group if r.status == "completed"]
    first = group[0]
    objective = metric or first.objective_name
    row: dict[str, Any] = {
        "rank": None,
        **{key: first.params.get(key) for key in keys},
        "data.folds": first.record.folds if first.record else None,
        "folds": len(done),
        "folds_run": len(group),
        "objective_name": objective,
    }
    for name, column in ((objective, "objective"), *((n, n) for n in names)):
        values = [v for v in (r.metric(name) for r in done) if v is not None]
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(values)
    row["run_dirs"] = " ".join(str(r.run_dir) for r in group)
    return row


def fold_rows(runs: list[Run], metric: str | None = None) -> list[dict[str, Any]]:
    """One row per configuration of the k-fold runs, best mean objective first ([] when no
    run is a fold). Only configurations with a completed fold get a rank."""
    folded = fold_runs(runs)
    if not folded:
        return []
    keys = _config_keys(folded)
    names = _metric_names(folded)
    table = [_row(group, keys, names, metric) for group in _groups(folded, keys)]
    maximise = folded[0].mode_of(metric) == "max"
    # configurations with every fold completed first: a mean over fewer folds is not
    # comparable (one lucky fold would win)
    scored = sorted(
        (r for r in table if r["objective_mean"] is not None),
        key=lambda r: (
            r["folds"] < (r["data.folds"] or r["folds_run"]),
            -r["objective_mean"] if maximise else r["objective_mean"],
        ),
    )
    for position, row in enumerate(scored, start=1):
        row["rank"] = position
    return scored + [r for r in table if r["objective_mean"] is None]


def fold_cell(row: dict[str, Any], name: str) -> str:
    """`0.9123 ± 0.0101` (mean ± std), `0.9123` for one fold, `-` for none."""
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if mean is None:
        return "-"
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def print_fold_table(table: list[dict[str, Any]], keys: list[str]) -> None:
    """The k-fold table, mean ± std over the folds of every metric: one column per
    configuration (one row per metric); with many configurations, one row per
    configuration and the main metrics (every metric is in compare_folds.csv)."""
    from rich.console import Console
    from rich.table import Table

    objective = next((r["objective_name"] for r in table if r["objective_name"]), "objective")
    names = [n[: -len("_mean")] for n in table[0] if n.endswith("_mean")]
    names = [n for n in names if n != objective and n != "objective"]
    grid = Table(title="k-fold: mean ± std over the folds", title_justify="left")
    if len(table) <= MAX_COLUMNS:
        _by_metric(grid, table, keys, objective, names)
    else:
        main = ("val/loss", objective.replace("val/", "test/", 1), "test/loss")
        _by_configuration(grid, table, keys, objective, [n for n in main if n in names])
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and CI: no squeezed columns
    console.print(grid)


MAX_COLUMNS = 6  # configurations shown side by side, one column each


def _done(row: dict[str, Any]) -> str:
    return f"{row['folds']}/{row['data.folds'] or row['folds_run']}"


def _by_metric(grid: Any, table: list[dict], keys: list[str], objective: str, names: list[str]):
    """Rows: the configuration's values, folds done, the objective, every other metric."""
    grid.add_column("", style="bold")
    for row in table:
        grid.add_column("#" + ("-" if row["rank"] is None else str(row["rank"])), justify="right")
    for key in keys:
        grid.add_row(short_key(key), *(fmt(row.get(key)) for row in table))
    grid.add_row("folds", *(_done(row) for row in table))
    grid.add_row(objective, *(fold_cell(row, "objective") for row in table), style="bold")
    for name in names:
        if any(row.get(f"{name}_mean") is not None for row in table):
            grid.add_row(name, *(fold_cell(row, name) for row in table))


def _by_configuration(
    grid: Any, table: list[dict], keys: list[str], objective: str, names: list[str]
) -> None:
    """Rows: one per configuration; columns: its values, folds done, the main metrics."""
    for name in ("#", *map(short_key, keys), "folds", objective, *names):
        grid.add_column(name, justify="right", style="bold" if name == objective else None)
    for row in table:
        grid.add_row(
            "-" if row["rank"] is None else str(row["rank"]),
            *(fmt(row.get(k)) for k in keys),
            _done(row),
            fold_cell(row, "objective"),
            *(fold_cell(row, n) for n in names),
        )


def best_fold_group(runs: list[Run], table: list[dict[str, Any]]) -> list[Run]:
    """The runs of the best-ranked configuration of `table` (all runs when none is ranked:
    no k-fold runs, or none completed)."""
    if not table or table[0]["rank"] is None:
        return runs
    folded = fold_runs(runs)
    keys = _config_keys(folded)
    return next(g for g in _groups(folded, keys) if _key(g[0], keys) == _key(table[0], keys))


def fold_keys(runs: list[Run]) -> list[str]:
    """The swept keys of the k-fold table (all but `data.fold`)."""
    return _config_keys(fold_runs(runs))
