"""A run's loggers: built with the full config, given the run's summary, finished cleanly.

conf/logger/*.yaml builds the two loggers below, Lightning's own with one difference each
(the notices they printed on every run were about nothing the user did).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import lightning.pytorch.loggers as pl_loggers
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

from autotimm.app.compose import instantiate_each
from autotimm.private_apis import (
    LOGGER_EXPERIMENT,
    LOGGER_FS,
    WANDB_JOB_INPUTS,
    WANDB_LAUNCH_INPUTS,
    WANDB_LOGGER_INIT,
)
from autotimm.records.results import RunRecord

log = logging.getLogger(__name__)


class RunDirectoryWriter(ExperimentWriter):
    """CSVLogger's writer for a log directory the run shares: only a metrics.csv is a log.

    The CSV logger writes <run dir>/metrics.csv, next to what Hydra writes there before
    the run starts (.hydra/, train.log) and the other loggers' and checkpoints' folders.
    Lightning's check took any file there for a previous log ("Experiment logs directory
    ... exists and is not empty. Previous log files in this directory will be deleted"), so
    every run printed it. Its warning (and removal) still comes where a metrics.csv is
    already there: a run directory used twice (a fixed hydra.run.dir).
    """

    def _check_log_dir_exists(self) -> None:  # private_apis.CSV_CHECK_LOG_DIR
        if getattr(self, LOGGER_FS).isfile(self.metrics_file_path):
            super()._check_log_dir_exists()


class RunCSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSVLogger writing into the run directory (RunDirectoryWriter)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if getattr(self, LOGGER_EXPERIMENT) is None:
            getattr(self, LOGGER_FS).makedirs(self.root_dir, exist_ok=True)
            setattr(self, LOGGER_EXPERIMENT, RunDirectoryWriter(log_dir=self.log_dir))
        return getattr(self, LOGGER_EXPERIMENT)


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's WandbLogger without the `anonymous=None` it hands every `wandb.init`.

    W&B warns "The anonymous setting has no effect and will be removed in a future
    version" for any `anonymous` given, None included, and Lightning (2.6) always gives
    one. An `anonymous` asked for (+logger.wandb.anonymous=true) still goes to W&B.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        init = getattr(self, WANDB_LOGGER_INIT, None)  # what the run's wandb.init gets
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The logger group, each given the full resolved config as its hyperparameters.

    The model saves its hparams with `logger=False`: Lightning's copy uses the model's
    short argument names (optimizer: adamw) that would overwrite the config's groups.
    """
    return start_loggers(cfg)()


def start_loggers(cfg: DictConfig) -> Callable[..., list[Any]]:
    """`build_loggers` whose runs start in a thread while the caller loads data and model.

    W&B's offline start (its import, service process and run: about 1.5 s on 2 cores) is
    mostly waiting, so it overlaps that work. The loggers are made and the config resolved
    here, in the caller's thread; the thread only hands each logger the config (W&B's and
    TensorBoard's runs start on that first use). The returned function waits and gives the
    loggers, raising the thread's error; `quiet=True` (the run failed already) logs the
    error instead, so the loggers made can still be finished.
    """
    loggers = instantiate_each(cfg.get("logger"))
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        skip_unstaged_launch_inputs()
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            for logger in loggers:
                logger.log_hyperparams(config)
        except BaseException as exc:  # raised in the caller's thread by `ready`
            errors.append(exc)

    thread = threading.Thread(target=start, name="autotimm-loggers", daemon=True)
    thread.start()

    def ready(quiet: bool = False) -> list[Any]:
        thread.join()
        if errors and not quiet:
            raise errors[0]
        if errors:
            log.warning("loggers did not start: %s: %s", type(errors[0]).__name__, errors[0])
        return loggers

    return ready


def skip_unstaged_launch_inputs() -> None:
    """Spare every W&B run start the import of W&B's launch package (1-3 s on 2 CPU cores).

    `wandb.init` imports it to apply "launch inputs", which only `wandb.launch` calls in this
    same process can have staged (a singleton in that package): while the package is not
    imported there are none, and skipping the look changes nothing.
    """
    try:
        from wandb.sdk.wandb_run import Run
    except ImportError:
        return
    detect = getattr(Run, WANDB_JOB_INPUTS, None)
    if detect is None or getattr(detect, "autotimm_lazy", False):
        return

    @functools.wraps(detect)  # its signature is W&B's (tests/test_private_apis.py reads it)
    def detect_if_staged(run: Any) -> None:
        if WANDB_LAUNCH_INPUTS in sys.modules:
            detect(run)

    detect_if_staged.autotimm_lazy = True  # type: ignore[attr-defined]
    setattr(Run, WANDB_JOB_INPUTS, detect_if_staged)


def wandb_summary(record: RunRecord) -> dict[str, Any]:
    """What the W&B table and parallel-coordinates views show of a run.

    Keys: `objective`, `best/val/...` (the best epoch's validation metrics), `test/...`,
    epochs, time, throughput, GPU, and the run's `status`.
    """
    return {
        "objective": record.objective.value,
        **{f"best/{key}": value for key, value in record.val.items()},
        **record.test,
        "epochs": record.epochs,
        "wall_time_s": record.wall_time_s,
        "train_images_per_s": record.train_images_per_s,
        "gpu": record.gpu,
        "status": record.status,
    }


def summarise(loggers: list[Any], record: RunRecord) -> None:
    """The record's summary into each W&B run's summary; pruned trials get a `pruned` tag."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            run.summary.update(wandb_summary(record))
            if record.pruned is not None:
                run.summary.update({"pruned_epoch": record.pruned.epoch})
                run.tags = (*(run.tags or ()), "pruned")


def finish_loggers(loggers: list[Any], failed: bool) -> None:
    """End this run's W&B run (failed runs as failed) so the next run gets a new one."""
    for logger in loggers:
        try:
            logger.finalize("failed" if failed else "success")
        except Exception as exc:  # finishing must never hide the real error
            log.warning("could not finalize %s: %s", type(logger).__name__, exc)
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
