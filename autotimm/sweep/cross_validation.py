"""Cross-validated trials (`sweep.cross_validate=true`): what may be combined with them.

A cross-validated run trains every fold of `data.folds` one after another inside its own
job (autotimm.app.cross_validation) and returns the mean of the folds' objectives. In a
sweep each fold's objective is reported to the trial's Optuna trial with the fold as the
step, so `hydra/sweeper/pruner=wilcoxon` (Optuna's WilcoxonPruner) can stop a trial that
is significantly worse than the best one on the folds both ran; the per-epoch pruning
callback stays off (its epochs would be taken for folds).

`check_cross_validation` refuses what cannot work, with one line naming the value and
what is accepted: before any trial (autotimm.sweep.multirun_checks) and again in every
run (sweeps started without that callback, single runs). Light imports only.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from autotimm.checks import ConfigValueError
from autotimm.records.objectives import objective_specs
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

WILCOXON = "optuna.pruners.WilcoxonPruner"
KEY = "sweep.cross_validate"


def cross_validates(cfg: Any) -> bool:
    """Whether the run trains all its folds itself (`sweep.cross_validate=true`)."""
    return OmegaConf.select(cfg, KEY, default=False) is True


def fold_dir_name(fold: int) -> str:
    return f"fold_{fold}"


def check_cross_validation(cfg: Any, hydra: Any | None) -> None:
    """Refuse a bad combination of `sweep.cross_validate` (cfg: the run's or the sweep's
    config; hydra: its `hydra` node, None outside Hydra)."""
    value = OmegaConf.select(cfg, KEY, default=False)
    if not isinstance(value, bool):
        raise ConfigValueError(KEY, value, "accepted: true or false")
    pruner = OmegaConf.select(hydra, "sweeper.pruner", default=None) if hydra else None
    target = pruner.get("_target_") if OmegaConf.is_dict(pruner) else None
    if target == WILCOXON and not value:
        raise UserError(
            f"hydra/sweeper/pruner=wilcoxon ({WILCOXON}) needs {KEY}=true: it compares a "
            "trial's fold values with the best trial's at the same folds, and epochs are no "
            f"such pairs; accepted: {KEY}=true data.folds=K (K >= 2), or an epoch pruner "
            "(median, percentile, successive_halving, ...) without cross-validation"
        )
    if not value:
        return
    _check_folds(cfg, hydra)
    metric, mode = cfg.get("optimized_metric"), cfg.get("optimized_mode", "max")
    if len(objective_specs(metric, mode)) > 1:
        raise ConfigValueError(
            "optimized_metric",
            OmegaConf.to_container(metric) if OmegaConf.is_list(metric) else metric,
            f"{KEY}=true averages one objective over the folds; accepted: one metric "
            "(a multi-objective sweep cannot be cross-validated within its trials)",
        )
    if cfg.get("ckpt_path"):
        raise ConfigValueError(
            "ckpt_path",
            cfg.get("ckpt_path"),
            f"{KEY}=true trains every fold from the start; accepted: null (a requeued "
            "trial resumes each fold from its own fold_<f>/checkpoints/last.ckpt)",
        )
    if target == WILCOXON:
        _warn_if_never_pruned(pruner, cfg.data.folds)


def _check_folds(cfg: Any, hydra: Any | None) -> None:
    folds = OmegaConf.select(cfg, "data.folds", default=None)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigValueError(
            "data.folds",
            folds,
            f"{KEY}=true runs every fold of data.folds in each trial; accepted: an integer "
            ">= 2 (e.g. data.folds=5)",
        )
    fold = OmegaConf.select(cfg, "data.fold", default=None)
    swept = OmegaConf.select(hydra, "sweeper.params", default=None) if hydra else None
    if fold is None and OmegaConf.is_dict(swept) and "data.fold" in swept:
        fold = swept["data.fold"]
    if fold is not None:
        raise ConfigValueError(
            "data.fold",
            fold,
            f"{KEY}=true runs folds 0..{folds - 1} itself; accepted: null (no data.fold, "
            "and not +sweeps=kfold, which runs one fold per job)",
        )


def smallest_p(pairs: int) -> float:
    """The smallest one-sided p-value of Wilcoxon's signed-rank test on `pairs` pairs
    (every pair worse): 2**-pairs (scipy's exact distribution)."""
    return 2.0**-pairs


def _warn_if_never_pruned(pruner: Any, folds: int) -> None:
    """A p_threshold no test before the last fold can beat: the sweep runs, nothing is pruned."""
    p_threshold = float(pruner.get("p_threshold", 0.1))
    startup = max(2, int(pruner.get("n_startup_steps", 2)))
    judged = range(startup, folds)  # folds seen when judged (the last fold is not judged)
    if any(smallest_p(n) < p_threshold for n in judged):
        return
    log.warning(
        "hydra.sweeper.pruner.p_threshold=%s with data.folds=%d: Wilcoxon's p-value after "
        "the %d fold(s) before the last is at least %.3g, so no trial can be pruned; raise "
        "p_threshold above it or use more folds",
        p_threshold,
        folds,
        folds - 1,
        smallest_p(folds - 1),
    )
