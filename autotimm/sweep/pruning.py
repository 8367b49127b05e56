"""The trial side of pruning: report the objective to the trial's Optuna trial, stop when told.

A sweep trial finds its own trial through the study's storage (the study name and URL
from Hydra's sweeper config, the trial number from `sweep.trial`), so this works wherever
the trial runs: the local pool, a SLURM job, a Ray task, another machine on a PostgreSQL
study. Nothing in memory is shared with the sweeper. After every validation epoch the
objective (`optimized_metric`) is reported as the intermediate value of that epoch; when
the pruner says so, training stops at the end of the epoch and the run is recorded as
``pruned`` (the sweeper then tells Optuna PRUNED).

Cross-validated trials (`sweep.cross_validate=true`) report one value per fold instead,
the fold as the step (autotimm.app.cross_validation, through `trial_handle`): their epochs
are not reported, so the steps a pruner sees (WilcoxonPruner: instance ids) are folds only.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from autotimm.records.results import Pruned

log = logging.getLogger(__name__)

PRUNER_OFF = "optuna.pruners.NopPruner"


class TrialHandle:
    """One Optuna trial, reached through the storage: report values, ask the pruner."""

    def __init__(self, storage: str, study_name: str, number: int, pruner: Any) -> None:
        import optuna

        from autotimm.sweep.storage import open_storage

        backend = open_storage(storage)
        self.study = optuna.load_study(
            study_name=study_name,
            storage=backend,
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(),  # never samples here; cheap to build
        )
        backend = optuna.storages.get_storage(backend)
        study_id = backend.get_study_id_from_name(study_name)
        trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.number = number
        self.prunes = not isinstance(pruner, optuna.pruners.NopPruner)  # worth asking

    def report(self, value: float, step: int, judge: bool = True) -> bool:
        """Report `value` for `step` (an epoch, or a fold of a cross-validated trial); True
        when the pruner says stop (asked if `judge`)."""
        self.trial.report(value, step=step)
        return judge and self.prunes and self.trial.should_prune()


class OptunaPruning(L.Callback):
    """Report `monitor` after each validation epoch; stop training when the trial is pruned."""

    def __init__(self, handle: TrialHandle, monitor: str) -> None:
        self.handle = handle
        self.monitor = monitor
        self.pruned: Pruned | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch, number = trainer.current_epoch, float(value)
        # the last epoch is reported, never judged: stopping there saves nothing and would
        # record a finished trial as pruned
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs - 1
        if self.handle.report(number, epoch, judge=not last):
            self.pruned = Pruned(epoch=epoch, value=number)
            trainer.should_stop = True  # ends after this epoch; checkpoints are kept
            log.info(
                "trial %d pruned at epoch %d (%s = %.4f)",
                self.handle.number,
                epoch,
                self.monitor,
                number,
            )


def pruning_callback(cfg: Any) -> OptunaPruning | None:
    """The pruning callback of a sweep trial whose sweeper has a pruner (else None).

    Single runs, `hydra/sweeper/pruner=none`, sweepers without pruning and cross-validated
    trials (judged after each fold, not each epoch) get None: they report no epochs.
    """
    from autotimm.sweep.cross_validation import cross_validates

    if cross_validates(cfg):
        return None
    handle = trial_handle(cfg)
    return OptunaPruning(handle, str(cfg.optimized_metric)) if handle is not None else None


def trial_handle(cfg: Any, needs_pruner: bool = True) -> TrialHandle | None:
    """The sweep trial's own Optuna trial, when its sweeper has a pruner (else None; with
    `needs_pruner=False` also without one: a cross-validated trial reports its folds).

    Single runs, sweepers without a study (Hydra's basic sweeper), `hydra/sweeper/
    pruner=none` (unless `needs_pruner=False`) and multi-objective studies (Optuna prunes
    single-objective studies only) get None.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from autotimm.records.objectives import objective_specs
    from autotimm.utils import hydra_config, in_multirun

    sweep = cfg.get("sweep") or {}
    if not in_multirun() or sweep.get("trial") is None:
        return None
    if len(objective_specs(cfg.optimized_metric, cfg.get("optimized_mode", "max"))) > 1:
        return None  # Optuna prunes single-objective studies only
    sweeper = hydra_config().sweeper
    pruner = OmegaConf.select(sweeper, "pruner")
    off = pruner is None or pruner.get("_target_") in (None, PRUNER_OFF)
    if (off and needs_pruner) or OmegaConf.select(sweeper, "study_name") is None:
        return None
    import optuna

    from autotimm.sweep.storage import absolute_storage, sweep_storage

    # the sweeper's storage: the configured one, or the journal file in the sweep directory
    storage = sweep_storage(OmegaConf.select(sweeper, "storage"), hydra_config().sweep.dir)
    built = optuna.pruners.NopPruner() if off else instantiate(pruner)
    return TrialHandle(absolute_storage(storage), str(sweeper.study_name), int(sweep.trial), built)
