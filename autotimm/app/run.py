"""The run behind `python train.py`: compose -> fit -> test -> record -> objective.

`train(cfg)` returns the objective (a float named by `optimized_metric`) so Hydra's
Optuna sweeper can optimise it; `main(cfg)` is train.py's entry (the run wrapper and
short user errors around `train`).
"""

from __future__ import annotations

import logging
import time
import warnings

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | list[float]:
    """One training run. Writes the run record (results.json); returns the objective."""
    # timm and autotimm.data (the model and data nodes need them) are imported here too,
    # so that the freeze below includes them
    from autotimm.startup import drop_nvml_check_without_nvml, scipy_signal_deferred

    with scipy_signal_deferred():  # 0.6 s nothing in a run uses (autotimm/startup.py)
        import lightning as L
    drop_nvml_check_without_nvml()  # a failing dlopen every Adam step on CPU machines
    import timm  # noqa: F401
    from hydra.utils import instantiate

    import autotimm.data  # noqa: F401
    from autotimm.app import compose, outcome
    from autotimm.app.config_nodes import validate_groups
    from autotimm.app.loggers import finish_loggers, start_loggers
    from autotimm.records.objectives import check_logged
    from autotimm.startup import freeze_imported
    from autotimm.sweep.pruning import pruning_callback
    from autotimm.training.callbacks import ValidationHistory

    freeze_imported()  # train.py's imports are done; before this run makes its own objects
    started = time.time()
    _quiet_known_warnings()
    if cfg.get("print_config", True) and outcome.is_rank_zero():  # DDP: printed once
        from autotimm.app.console import print_config_tree

        print_config_tree(cfg)
    groups = validate_groups(cfg)  # every bad value of every group fails here, before data
    L.seed_everything(cfg.seed, workers=True)
    _fast_matmuls()

    # W&B's start (about 1.5 s, mostly waiting) overlaps loading the data and the model
    loggers_ready, loggers, failed = start_loggers(cfg), [], True
    try:
        datamodule = instantiate(cfg.data)
        model = compose.build_model(cfg, datamodule, groups)
        check_logged(cfg.optimized_metric, cfg.get("optimized_mode", "max"), model)
        history, pruning = ValidationHistory(), pruning_callback(cfg)  # pruning: sweeps only
        callbacks = compose.build_callbacks(cfg, history, *filter(None, [pruning]))
        _sync_batchnorm_on_cuda_only(cfg)
        loggers = loggers_ready()
        trainer = compose.build_trainer(cfg, callbacks, loggers)
        if cfg.get("tune_batch_size"):
            compose.tune_batch_size(trainer, model, datamodule)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        pruned = pruning.pruned if pruning is not None else None
        record = _fitted_record(cfg, trainer, model, datamodule, history, pruned, started)
        if trainer.is_global_zero:  # DDP: one record; the metrics are already reduced
            _keep(record, loggers)
        failed = False
        return _objective(record)
    finally:
        finish_loggers(loggers or loggers_ready(quiet=True), failed)


def _fitted_record(cfg: DictConfig, trainer, model, datamodule, history, pruned, started: float):
    """The record of a fit that ended: its best epoch, and the test of that epoch's
    checkpoint (a pruned trial is not tested). An interrupted fit raises KeyboardInterrupt,
    which the run wrapper records."""
    from autotimm.app import outcome

    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")
    _validate_if_nothing_ran(trainer, model, datamodule, history)
    best = outcome.best_epoch(cfg, history)
    test = {} if pruned else _test(cfg, trainer, model, datamodule)
    return outcome.trained_record(cfg, trainer, model, datamodule, best, test, started, pruned)


def _keep(record, loggers) -> None:
    """Write the run's record (and its model card); the loggers' summary."""
    from autotimm.app.loggers import summarise
    from autotimm.records.results import write_record

    write_record(record.run_dir, record)
    if record.status == "completed":
        from autotimm.inference.model_card import write_model_card_quietly

        write_model_card_quietly(record.run_dir)  # MODEL_CARD.md; a failure only logs
    summarise(loggers, record)
    found = ", ".join(f"{o.name} = {o.value:.4g}" for o in record.objectives or [record.objective])
    log.info("objective %s (%s)", found, record.run_dir)


def _objective(record) -> float | list[float]:
    """The run's objective: one float, or one per objective (multi-objective sweeps)."""
    objectives = record.objectives or [record.objective]
    return record.objective.value if len(objectives) == 1 else [o.value for o in objectives]


def _validate_if_nothing_ran(trainer, model, datamodule, history) -> None:
    """A run resumed from a last.ckpt already at max_epochs (a trial requeued after its
    last epoch) trains nothing: validate its best checkpoint so the record has metrics."""
    if history.epochs:
        return
    checkpoint = trainer.checkpoint_callback
    best = (checkpoint.best_model_path if checkpoint is not None else "") or None
    trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)


def _test(cfg: DictConfig, trainer, model, datamodule) -> dict[str, float | None]:
    """Test the best checkpoint (the last weights without one); {} with `test=false`."""
    from autotimm.app.outcome import metric_values

    if not cfg.get("test", True):
        return {}
    checkpoint = trainer.checkpoint_callback
    best = (checkpoint.best_model_path if checkpoint is not None else "") or None
    out = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    return metric_values(out[0] if out else {}, "test/")


def _sync_batchnorm_on_cuda_only(cfg: DictConfig) -> None:
    """torch's SyncBatchNorm works on CUDA only: DDP on the CPU (trainer=ddp
    trainer.accelerator=cpu) keeps plain BatchNorm, whose buffers DDP takes from rank 0."""
    from omegaconf import open_dict

    from autotimm.app.compose import uses_cuda

    if cfg.trainer.get("sync_batchnorm") and not uses_cuda(cfg):
        log.info("trainer.sync_batchnorm=true needs CUDA devices: off on the CPU")
        with open_dict(cfg):
            cfg.trainer.sync_batchnorm = False


def _quiet_known_warnings() -> None:
    # Lightning 2.6 warns about its own use of torch's pytree API on every step; nothing a
    # user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # an epoch shorter than trainer.log_every_n_steps still logs: the steps count across
    # epochs, and every epoch logs its epoch values (the default digits run has 19 batches)
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")


def _fast_matmuls() -> None:
    import torch

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer


def main(cfg: DictConfig) -> float | None:
    """train.py's entry: the run wrapper (sweep trial set-up, failure record) around
    `train`; user errors print one short message in single runs."""
    from autotimm.app.run_wrapper import run_trial
    from autotimm.user_errors import user_errors_reported
    from autotimm.utils import trusting_targets

    # trusted here too: a launcher's worker process calls this without train.py's context
    with user_errors_reported(), trusting_targets():
        return run_trial(train, cfg)
