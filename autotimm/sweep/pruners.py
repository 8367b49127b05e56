"""An Optuna pruner wrapper for autotimm's sweeps: judge each trial by its best epoch so far.

Imported by Hydra's `_target_` (conf/hydra/sweeper/pruner/hyperband.yaml) in the sweeper
and in each trial; importing it imports optuna, so `autotimm.sweep` does not import it.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import optuna

from autotimm.user_errors import UserError


class BestSoFarPruner(optuna.pruners.BasePruner):
    """Runs `wrapped_pruner` on each trial's best value so far instead of its latest one.

    A validation curve is noisy: a good learning rate can dip for an epoch (0.63, 0.54, 0.73)
    and a pruner that judges the dip (successive halving reads one epoch per rung) throws the
    best trial away. Here every trial, the judged one and the ones it is compared with, shows
    the wrapped pruner its running best (max or min, in the study's direction) at each step.
    The intermediate values the trials report stay the raw per-epoch ones (successive
    halving's own rung records, `completed_rung_k` system attributes, hold the running best
    it judged). A NaN at the latest epoch (a diverged trial) is shown as NaN, so the wrapped
    pruner stops it as it would without the wrapper.

    Wraps the pruners that compare trials: successive halving, Hyperband, median,
    percentile. Patient and threshold pruners look at one trial's own curve, whose running
    best never gets worse, so under this wrapper they would never prune: refused.
    """

    def __init__(self, wrapped_pruner: optuna.pruners.BasePruner) -> None:
        comparing = (
            optuna.pruners.SuccessiveHalvingPruner,
            optuna.pruners.HyperbandPruner,
            optuna.pruners.PercentilePruner,  # MedianPruner is one
        )
        if not isinstance(wrapped_pruner, comparing):
            raise UserError(
                f"wrapped_pruner={type(wrapped_pruner).__name__}: best_so_far wraps a pruner "
                "that compares trials; accepted: optuna.pruners.SuccessiveHalvingPruner, "
                "HyperbandPruner, MedianPruner, "
                "PercentilePruner"
            )
        self._wrapped_pruner = wrapped_pruner

    def prune(self, study: Any, trial: Any) -> bool:
        best = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return self._wrapped_pruner.prune(_BestSoFarStudy(study, best), best_so_far(trial, best))


def best_so_far(trial: Any, best: Any) -> Any:
    """A shallow copy of the FrozenTrial whose intermediate value at each step is the best
    (`best` is max or min) of its values up to that step; a NaN at the last step stays NaN."""
    values = trial.intermediate_values
    steps = sorted(values)
    running = dict(
        zip(steps, itertools.accumulate((values[s] for s in steps), _nan_safe(best)), strict=True)
    )
    if steps and values[steps[-1]] != values[steps[-1]]:  # the latest epoch diverged
        running[steps[-1]] = values[steps[-1]]
    view = copy.copy(trial)
    view.intermediate_values = running
    return view


def _nan_safe(best: Any) -> Any:
    """max/min of two values where a NaN (a diverged epoch) never replaces a number."""
    return lambda a, b: a if b != b else b if a != a else best(a, b)


class _BestSoFarStudy:
    """The study as the wrapped pruner sees it: its trials' values are the running bests;
    everything else (direction, storage, name) is the study's own."""

    def __init__(self, study: Any, best: Any) -> None:
        self._study, self._best = study, best

    def get_trials(self, *args: Any, **kwargs: Any) -> list[Any]:
        return [best_so_far(t, self._best) for t in self._study.get_trials(*args, **kwargs)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
