"""Optuna's own plots of a sweep's study, each a PNG beside compare.png.

Drawn by `optuna.visualization.matplotlib` (headless, Agg): the optimization history,
the parameter importances, the parallel coordinates, the intermediate values (every
trial's reported curve, pruned ones included) and, for multi-objective studies, the Pareto
front. A multi-objective study gets the first three once per objective
(`optuna_history_<metric>.png`, ...). A plot Optuna cannot draw for this study is skipped
with a one-line note, never an error: the table and CSV are the report's core.

matplotlib and optuna are imported only when plots are drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from autotimm.compare.study import SweepStudy, slug

HISTORY, IMPORTANCES, PARALLEL = "optuna_history", "optuna_importances", "optuna_parallel"
INTERMEDIATE, PARETO = "optuna_intermediate.png", "optuna_pareto.png"


@dataclass
class _Plot:
    """One PNG: its file name, what it shows, how Optuna draws it, why not (None: it can)."""

    file: str
    title: str
    draw: Callable[[], Any]
    skip: str | None = None


def _per_objective(sweep: SweepStudy, vis: Any, done: list[Any], params: set[str]) -> list[_Plot]:
    """History, importances and parallel coordinates, once per objective."""
    multi = sweep.multi_objective
    plots = []
    for index, name in enumerate(sweep.objective_names):
        suffix = f"_{slug(name)}.png" if multi else ".png"
        target: dict[str, Any] = {"target_name": name}
        if multi:  # Optuna plots one objective at a time
            target["target"] = partial(_value, index=index)
        no_trial = None if done else "no completed trial"
        no_params = None if params else "no swept parameter"
        plots += [
            _Plot(
                HISTORY + suffix,
                "optimization history",
                partial(vis.plot_optimization_history, sweep.study, **target),
                no_trial,
            ),
            _Plot(
                IMPORTANCES + suffix,
                "parameter importances",
                partial(_importances, vis, sweep.study, **target),
                None if len(done) >= 2 else f"{len(done)} completed trial(s), 2 needed",
            ),
            _Plot(
                PARALLEL + suffix,
                "parallel coordinates",
                partial(vis.plot_parallel_coordinate, sweep.study, **target),
                no_trial or no_params,
            ),
        ]
    return plots


def _importances(vis: Any, study: Any, **target: Any) -> Any:
    """Optuna's importances plot by its default evaluator (fANOVA), seeded: the same study
    draws the same bars."""
    from optuna.importance import FanovaImportanceEvaluator

    evaluator = FanovaImportanceEvaluator(seed=0)
    return vis.plot_param_importances(study, evaluator=evaluator, **target)


def _value(trial: Any, index: int) -> float:
    """One objective of a multi-objective trial (a module function: partial() can bind it)."""
    return trial.values[index]


def _why_no_curves(sweep: SweepStudy) -> str:
    if sweep.multi_objective:  # Optuna: Trial.report is not supported for multi-objective
        return "trials of a multi-objective study report no intermediate values"
    return "no trial reported intermediate values (the sweep ran without a pruner)"


def _plots(sweep: SweepStudy, vis: Any) -> list[_Plot]:
    """Every plot of this study, with the reason it cannot be drawn where there is one."""
    from optuna.trial import TrialState

    trials = sweep.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    params = {p for t in done for p in t.params}
    plots = _per_objective(sweep, vis, done, params)
    reported = any(t.intermediate_values for t in trials)
    plots.append(
        _Plot(
            INTERMEDIATE,
            "intermediate values",
            partial(vis.plot_intermediate_values, sweep.study),
            None if reported else _why_no_curves(sweep),
        )
    )
    if sweep.multi_objective:
        count = len(sweep.study.directions)
        plots.append(
            _Plot(
                PARETO,
                "Pareto front",
                partial(vis.plot_pareto_front, sweep.study, target_names=sweep.objective_names),
                (None if done else "no completed trial")
                if count in (2, 3)
                else f"Optuna draws the front of 2 or 3 objectives, not {count}",
            )
        )
    return plots


def _save(plot: _Plot, path: Path) -> None:
    """Draw one plot into `path`, its figure closed whatever happens."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    before = set(plt.get_fignums())
    # rc_context: Optuna switches to the ggplot style, which must not leak into compare.png
    with matplotlib.rc_context(), warnings.catch_warnings():
        # Optuna still marks its matplotlib plots experimental: a warning per plot otherwise
        warnings.simplefilter("ignore", ExperimentalWarning)
        # matplotlib's remarks on Optuna's axes (one trial: "identical low and high ylims")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna\.")
        try:
            axes = plot.draw()
            axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        finally:
            for number in set(plt.get_fignums()) - before:
                plt.close(number)


def study_plots(sweep: SweepStudy, folder: Path) -> tuple[list[Path], list[str]]:
    """Write the study's Optuna plots into `folder`: (the PNGs, a note per plot skipped)."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import optuna.visualization.matplotlib as vis

    written: list[Path] = []
    notes: list[str] = []
    for plot in _plots(sweep, vis):
        if plot.skip is not None:
            notes.append(f"{plot.file} skipped ({plot.title}): {plot.skip}")
            continue
        path = folder / plot.file
        try:
            _save(plot, path)
        except Exception as exc:  # an extra plot must never cost the report already written
            path.unlink(missing_ok=True)
            reason = (str(exc).strip().splitlines() or [""])[0]
            notes.append(
                f"{plot.file} skipped ({plot.title}): Optuna cannot draw it: "
                f"{type(exc).__name__}: {reason}"
            )
            continue
        written.append(path)
    return written, notes
