"""compare.png: the objective against each swept value, and every run's validation curve.

matplotlib is imported only when a figure is drawn (`import autotimm` stays light).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotimm.records.ranking import COMPLETED, PRUNED, group, rank
from autotimm.records.runs import Run, short_key, swept_keys

PNG_FILE = "compare.png"


@dataclass
class _Groups:
    """The ranked runs split as the panels draw them."""

    done: list[Run]  # completed, with a value
    pruned: list[Run]  # pruned, with a value
    failed: list[Run]  # everything else: failed, interrupted, incomplete, no value
    best: Run | None

    @classmethod
    def of(cls, ranked: list[Run], objective: str) -> _Groups:
        where = {id(r): group(r, objective) for r in ranked}
        done = [r for r in ranked if where[id(r)] == COMPLETED]
        pruned = [r for r in ranked if where[id(r)] == PRUNED]
        failed = [r for r in ranked if where[id(r)] not in (COMPLETED, PRUNED)]
        return cls(done, pruned, failed, done[0] if done else None)


def validation_curve(run: Run, metric: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of `metric` in the run's metrics.csv; empty when it has none."""
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
    groups = _Groups.of(ranked, objective)
    panels = len(keys) + 1
    columns = min(3, panels)
    lines = math.ceil(panels / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 4 * lines), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, keys, strict=False):
        _param_panel(ax, key, groups, objective)
    _curves_panel(flat[len(keys)], ranked, objective, groups.best)
    for ax in flat[panels:]:
        ax.set_visible(False)
    pruned = sum(r.status == "pruned" for r in runs)
    fig.suptitle(
        f"{len(runs)} runs, {len(groups.done)} completed"
        + (f", {pruned} pruned" if pruned else "")
        + f" — {objective}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves_panel(ax: Any, ranked: list[Run], objective: str, best: Run | None) -> None:
    """Every run's validation curve (pruned ones dashed: they stop where the pruner did)."""
    curve_metric = objective if objective.startswith("val/") else "val/accuracy"
    for run in ranked:
        epochs, values = validation_curve(run, curve_metric)
        if not values:
            continue
        is_best = run is best
        suffix = " (best)" if is_best else (" (pruned)" if run.status == "pruned" else "")
        ax.plot(
            epochs,
            values,
            marker="o",
            markersize=3,
            linestyle="--" if run.status == "pruned" else "-",
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.6,
            label=f"trial {run.trial}{suffix}",
            zorder=3 if is_best else 2,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(curve_metric)
    ax.set_title("validation curves")
    if len(ranked) <= 12:
        ax.legend(fontsize="small")


def _x_of(ax: Any, key: str, runs: list[Run]) -> Callable[[Run], Any]:
    """A run's x position for `key`: its value (log axis over a 10x range) or category."""
    values = [r.params.get(key) for r in runs]
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        positive = [v for v in present if v > 0]
        if positive and len(positive) == len(present) and max(positive) / min(positive) >= 10:
            ax.set_xscale("log")
        return lambda run: run.params.get(key)
    categories = sorted({str(v) for v in values})
    position = {c: i for i, c in enumerate(categories)}
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    return lambda run: position[str(run.params.get(key))]


def _param_panel(ax: Any, key: str, groups: _Groups, objective: str) -> None:
    """The objective against one swept value; failed runs as red crosses at the bottom."""
    done, pruned, failed, best = groups.done, groups.pruned, groups.failed, groups.best
    x_of = _x_of(ax, key, done + pruned + failed)
    ax.scatter(
        [x_of(r) for r in done],
        [r.metric(objective) for r in done],
        label="completed",
        zorder=2,
    )
    pruned = [r for r in pruned if r.params.get(key) is not None]
    if pruned:
        ys = [r.metric(objective) for r in pruned]
        ax.scatter(
            [x_of(r) for r in pruned], ys, marker="v", color="gray", label="pruned", zorder=2
        )
    if failed and done:
        low = min(r.metric(objective) for r in done)
        xs = [x_of(r) for r in failed if r.params.get(key) is not None]
        if xs:
            ax.scatter(
                xs, [low] * len(xs), marker="x", color="red", label="failed/unfinished", zorder=3
            )
    if best is not None and best.params.get(key) is not None:
        ax.scatter(
            [x_of(best)],
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
    ax.set_title(f"{objective} vs {short_key(key)}")
    ax.legend(fontsize="small")
