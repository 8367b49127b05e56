"""Compare the runs of a sweep (or any folder of runs) locally, no W&B server needed.

    python -m autotimm.compare outputs/sweeps/lr_mixup_ls
    python -m autotimm.compare outputs/runs --metric test/accuracy

Prints a ranked table (trial, swept values, objective, val/test metrics, epochs, time,
GPU, status) and writes, into the folder (or --out):

- compare.csv: every run, every metric;
- compare.png: the objective against each swept value, and every run's validation curve;
- best_config.yaml: the best run's full config, re-run with one command
  (`python train.py --config-dir <folder> --config-name best_config`).

Runs are the folders below <dir> holding a results.json (or a .hydra/ record without
one: a run that was killed or is still going). Swept values are the sweep's parameters
(results.json `sweep.params`) and any override whose value differs between runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotimm.results import RESULTS_FILE

CSV_FILE, PNG_FILE, BEST_CONFIG = "compare.csv", "compare.png", "best_config.yaml"
SKIP_DIRS = {"wandb", "checkpoints", ".submitit", "tensorboard", ".gpu_locks", ".hydra"}
# overrides that differ between runs without being part of the comparison
NOT_SWEPT = ("sweep.", "hydra.", "paths.", "ckpt_path", "print_config")


@dataclass
class Run:
    run_dir: Path
    results: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.results.get("status") or "incomplete")

    @property
    def objective_name(self) -> str | None:
        return (self.results.get("objective") or {}).get("name")

    @property
    def mode(self) -> str:
        return (self.results.get("objective") or {}).get("mode") or "max"

    @property
    def trial(self) -> str:
        number = (self.results.get("sweep") or {}).get("trial", self.overrides.get("sweep.trial"))
        return str(number) if number is not None else self.run_dir.name

    def metric(self, name: str | None) -> float | None:
        if name is None:
            return None
        if name == self.objective_name or name == "objective":
            value = (self.results.get("objective") or {}).get("value")
        else:
            section = name.split("/", 1)[0]
            value = (self.results.get(section) or {}).get(name)
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


def find_runs(root: Path) -> list[Run]:
    """Every run below root (results.json, or a .hydra record of a run that never finished)."""
    runs = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        has_results = RESULTS_FILE in files
        if not has_results and not (Path(here) / ".hydra" / "overrides.yaml").is_file():
            continue
        if Path(here) == root and not has_results and dirs:
            continue  # the sweep folder itself (Hydra may leave a .hydra there)
        run_dir = Path(here)
        results: dict[str, Any] = {}
        if has_results:
            try:
                results = json.loads((run_dir / RESULTS_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                results = {"status": "unreadable"}
        lines = results.get("overrides")
        if lines is None:
            try:
                lines = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
            except (OSError, yaml.YAMLError):
                lines = []
        run = Run(run_dir, results, _parse_overrides(lines))
        run.params = dict((results.get("sweep") or {}).get("params") or {})
        runs.append(run)
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
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    return keys


def rank(runs: list[Run], metric: str | None = None) -> list[Run]:
    """Completed runs best first (by the objective or `metric`), then the others."""

    def key(run: Run) -> tuple[int, float]:
        value = run.metric(metric or run.objective_name)
        if value is None or run.status != "completed":
            return (1, 0.0)
        return (0, -value if run.mode == "max" else value)

    return sorted(runs, key=key)


def _metric_names(runs: list[Run], section: str) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [k for k in (run.results.get(section) or {}) if k not in names]
    return names


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _short(key: str) -> str:
    return key.split(".")[-1]


def rows(runs: list[Run], metric: str | None = None) -> list[dict[str, Any]]:
    """One flat row per run, ranked (the CSV's rows)."""
    keys = swept_keys(runs)
    val_names, test_names = _metric_names(runs, "val"), _metric_names(runs, "test")
    table = []
    for position, run in enumerate(rank(runs, metric), start=1):
        results = run.results
        row: dict[str, Any] = {
            "rank": position if run.status == "completed" else None,
            "trial": run.trial,
            "status": run.status,
            "objective_name": run.objective_name,
            "objective": run.metric(run.objective_name),
        }
        row.update({key: run.params.get(key) for key in keys})
        row.update({name: run.metric(name) for name in val_names + test_names})
        row.update(
            epochs=results.get("epochs"),
            best_epoch=results.get("best_epoch"),
            wall_time_s=results.get("wall_time_s"),
            train_images_per_s=results.get("train_images_per_s"),
            device=results.get("device"),
            gpu=results.get("gpu"),
            failure=results.get("failure"),
            run_dir=str(run.run_dir),
        )
        table.append(row)
    return table


def write_csv(table: list[dict[str, Any]], path: Path) -> Path:
    columns: list[str] = []
    for row in table:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in table:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def print_table(runs: list[Run], table: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = swept_keys(runs)
    objective = next((r["objective_name"] for r in table if r["objective_name"]), "objective")
    headline = [n for n in ("val/loss",) if any(n in r for r in table)]
    tests = [n for n in (objective.replace("val/", "test/", 1), "test/loss") if n != objective]
    tests = [n for n in tests if any(r.get(n) is not None for r in table)]
    grid = Table(title=title, title_justify="left")
    grid.add_column("#", justify="right")
    grid.add_column("trial", overflow="fold")
    for key in keys:
        grid.add_column(_short(key), justify="right")
    grid.add_column(objective, justify="right", style="bold")
    for name in headline + tests:
        grid.add_column(name, justify="right")
    for name in ("epochs", "time", "GPU", "status"):
        grid.add_column(name, justify="right" if name in ("epochs", "time") else "left")
    for row in table:
        status = row["status"]
        style = None if status == "completed" else ("red" if status == "failed" else "yellow")
        seconds = row.get("wall_time_s")
        grid.add_row(
            _fmt(row["rank"]),
            row["trial"],
            *(_fmt(row.get(k)) for k in keys),
            _fmt(row["objective"]),
            *(_fmt(row.get(n)) for n in headline + tests),
            _fmt(row.get("epochs")),
            f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-",
            _fmt(row.get("gpu")) if row.get("gpu") is not None else (row.get("device") or "-"),
            status,
            style=style,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and CI: no squeezed columns
    console.print(grid)
    for row in table:
        if row.get("failure"):
            console.print(f"[red]trial {row['trial']} {row['status']}:[/] {row['failure']}")


def validation_curve(run: Run, metric: str) -> tuple[list[float], list[float]]:
    path = run.run_dir / "metrics.csv"
    if not path.is_file():
        return [], []
    epochs, values = [], []
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            raw = line.get(metric)
            if raw in (None, ""):
                continue
            try:
                epochs.append(float(line.get("epoch") or len(epochs)))
                values.append(float(raw))
            except ValueError:
                continue
    return epochs, values


def plot(runs: list[Run], path: Path, metric: str | None = None) -> Path:
    """compare.png: objective vs each swept value, and every run's validation curve."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    keys = swept_keys(runs)
    ranked = rank(runs, metric)
    objective = metric or next((r.objective_name for r in runs if r.objective_name), "objective")
    panels = len(keys) + 1
    columns = min(3, panels)
    lines = math.ceil(panels / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 4 * lines), squeeze=False)
    flat = list(axes.flat)
    done = [r for r in ranked if r.status == "completed" and r.metric(objective) is not None]
    failed = [r for r in ranked if r not in done]
    best = done[0] if done else None
    for ax, key in zip(flat, keys, strict=False):
        _param_panel(ax, key, done, failed, objective, best)
    curves = flat[len(keys)]
    curve_metric = objective if objective.startswith("val/") else "val/accuracy"
    for run in ranked:
        epochs, values = validation_curve(run, curve_metric)
        if not values:
            continue
        is_best = run is best
        curves.plot(
            epochs,
            values,
            marker="o",
            markersize=3,
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.6,
            label=f"trial {run.trial}" + (" (best)" if is_best else ""),
            zorder=3 if is_best else 2,
        )
    curves.set_xlabel("epoch")
    curves.set_ylabel(curve_metric)
    curves.set_title("validation curves")
    if len(ranked) <= 12:
        curves.legend(fontsize="small")
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{len(runs)} runs, {len(done)} completed — {objective}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _param_panel(ax, key: str, done: list[Run], failed: list[Run], objective: str, best) -> None:
    values = [r.params.get(key) for r in done + failed]
    numeric = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None
    )
    if numeric:
        xs = [r.params.get(key) for r in done]
        ax.scatter(xs, [r.metric(objective) for r in done], label="completed", zorder=2)
        positive = [v for v in values if v is not None and v > 0]
        if positive and len(positive) == len([v for v in values if v is not None]):
            if max(positive) / min(positive) >= 10:
                ax.set_xscale("log")
        for_x = lambda run: run.params.get(key)  # noqa: E731
    else:
        categories = sorted({str(v) for v in values})
        position = {c: i for i, c in enumerate(categories)}
        ax.scatter(
            [position[str(r.params.get(key))] for r in done],
            [r.metric(objective) for r in done],
            label="completed",
            zorder=2,
        )
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        for_x = lambda run: position[str(run.params.get(key))]  # noqa: E731
    if failed and done:
        low = min(r.metric(objective) for r in done)
        xs = [for_x(r) for r in failed if r.params.get(key) is not None]
        if xs:
            ax.scatter(
                xs, [low] * len(xs), marker="x", color="red", label="failed/unfinished", zorder=3
            )
    if best is not None and best.params.get(key) is not None:
        ax.scatter(
            [for_x(best)],
            [best.metric(objective)],
            s=160,
            facecolors="none",
            edgecolors="green",
            linewidths=2,
            label="best",
            zorder=4,
        )
    ax.set_xlabel(key)
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} vs {_short(key)}")
    ax.legend(fontsize="small")


def write_best_config(best: Run, folder: Path, repo_train: Path) -> Path | None:
    """The best run's full config as a primary config (`--config-name best_config`)."""
    source = best.run_dir / ".hydra" / "config.yaml"
    if not source.is_file():
        return None
    config = yaml.safe_load(source.read_text()) or {}
    sweep = config.get("sweep")
    if isinstance(sweep, dict):  # a re-run is a run of its own, not a trial of the sweep
        sweep.update(name=None, job_type="train", trial=None, params={}, tags=[])
        for key in ("worker_pid", "started_at", "gpu"):
            sweep.pop(key, None)
    config["ckpt_path"] = None
    value = best.metric(best.objective_name)
    header = (
        f"# The best run of {folder} (trial {best.trial}: {best.objective_name} = {value}),\n"
        f"# from {source}; written by `python -m autotimm.compare`. Re-run it with:\n"
        f"#   python {repo_train} --config-dir {folder} --config-name best_config\n"
        "# Values can still be overridden (trainer.max_epochs=50); config groups cannot.\n"
    )
    body = {"defaults": [{"hydra": "default"}, "_self_"], **config}
    path = folder / BEST_CONFIG
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
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
            f"no runs below {root} (a run folder holds results.json or .hydra/)"
        )
    target = Path(out).expanduser().resolve() if out else root
    target.mkdir(parents=True, exist_ok=True)
    table = rows(runs, metric)
    written = {"csv": write_csv(table, target / CSV_FILE)}
    completed = sum(r.status == "completed" for r in runs)
    title = (
        f"{root}: {len(runs)} runs, {completed} completed, "
        f"{len(runs) - completed} failed or unfinished"
    )
    if show:
        print_table(runs, table, title)
    if make_plot:
        written["png"] = plot(runs, target / PNG_FILE, metric)
    ranked = [r for r in rank(runs, metric) if r.status == "completed"]
    if ranked:
        train_py = Path(__file__).resolve().parents[1] / "train.py"
        best_path = write_best_config(ranked[0], target, train_py)
        if best_path is not None:
            written["best_config"] = best_path
            if show:
                print(
                    f"best: trial {ranked[0].trial} -> {best_path}\n"
                    f"re-run: python {train_py} --config-dir {target} --config-name best_config"
                )
    if show:
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return {"runs": runs, "rows": table, "files": written}


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
