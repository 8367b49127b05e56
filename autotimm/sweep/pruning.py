"""The trial side of pruning: report the objective to the trial's Optuna trial, stop when told.

A sweep trial finds its own trial through the study's storage (the study name and URL
from Hydra's sweeper config, the trial number from `sweep.trial`), so this works wherever
the trial runs: the local pool, a SLURM job, a Ray task, another machine on a PostgreSQL
study. Nothing in memory is shared with the sweeper. After every validation epoch the
objective (`optimized_metric`) is reported as the intermediate value of that epoch; when
the pruner says so, training stops at the end of the epoch and the run is recorded as
``pruned`` (the sweeper then tells Optuna PRUNED).
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

    def report(self, value: float, epoch: int, judge: bool = True) -> bool:
        """Report `value` for `epoch`; True when the pruner says stop (asked if `judge`)."""
        self.trial.report(value, step=epoch)
        return judge and self.trial.should_prune()


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

    Single runs, `hydra/sweeper/pruner=none` and sweepers without pruning get None, so
    they run exactly as without pruning.
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
    if pruner is None or pruner.get("_target_") in (None, PRUNER_OFF):
        return None
    from autotimm.sweep.storage import absolute_storage, sweep_storage

    # the sweeper's storage: the configured one, or the journal file in the sweep directory
    storage = sweep_storage(OmegaConf.select(sweeper, "storage"), hydra_config().sweep.dir)
    handle = TrialHandle(
        absolute_storage(storage), str(sweeper.study_name), int(sweep.trial), instantiate(pruner)
    )
    return OptunaPruning(handle, str(cfg.optimized_metric))
