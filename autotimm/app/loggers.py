"""A run's loggers: built with the full config, given the run's summary, finished cleanly."""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autotimm.app.compose import instantiate_each
from autotimm.private_apis import WANDB_JOB_INPUTS, WANDB_LAUNCH_INPUTS
from autotimm.records.results import RunRecord

log = logging.getLogger(__name__)


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
