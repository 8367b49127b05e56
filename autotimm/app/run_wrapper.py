"""What wraps every run: a sweep trial's set-up, and the record of a run that raised.

`run_trial(train, cfg)` runs `train(cfg)`. A run that raises leaves a results.json saying
why (failed, or interrupted). In a multirun (a sweep trial) it first claims this
process's GPU (before anything touches CUDA), puts the trial's swept values into
`sweep.params` and short W&B tags into `sweep.tags` (conf/logger/wandb.yaml reads them),
and resumes from the trial's own `last.ckpt` when a requeued trial (SLURM preemption or
timeout) finds one. With `sweep.cross_validate=true` the run trains every fold itself
(autotimm.app.cross_validation), each fold recorded like a run.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from autotimm.app.outcome import failed_record, is_rank_zero
from autotimm.records.results import RecordError, read_record, write_record
from autotimm.sweep.cross_validation import check_cross_validation, cross_validates
from autotimm.sweep.devices import claim_gpu
from autotimm.sweep.multirun_checks import check_one_process_per_trial
from autotimm.utils import hydra_config, in_multirun

log = logging.getLogger(__name__)

MAX_TAG = 64  # W&B's limit on one tag


def swept_values(cfg: DictConfig) -> dict[str, Any]:
    """The values of the keys the sweeper varies (`hydra.sweeper.params`), for this trial."""
    hc = hydra_config()
    params = OmegaConf.select(hc, "sweeper.params") if hc is not None else None
    if not params:
        return {}
    choices = hc.runtime.choices
    values: dict[str, Any] = {}
    for key in params:
        key = str(key).lstrip("+~")
        if key in choices:  # a config group (backbone=resnet18): its chosen option
            values[key] = choices[key]
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        values[key] = value
    return values


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) and value != 0 else str(value)
    return str(value)


def short_tags(values: dict[str, Any]) -> list[str]:
    """`lr=0.000316`, `mixup_alpha=0.31`, `backbone=resnet18`: one tag per swept value."""
    return [f"{key.split('.')[-1]}={short_value(v)}"[:MAX_TAG] for key, v in values.items()]


def start_trial(cfg: DictConfig) -> bool:
    """Prepare a sweep trial (see the module doc). Returns whether this run is one."""
    if not in_multirun():
        return False
    check_one_process_per_trial(cfg)  # sweeps started without conf/hydra's callback
    claim_gpu()  # first: before anything initialises CUDA
    if "sweep" not in cfg:
        return True
    values = swept_values(cfg)
    with open_dict(cfg):
        cfg.sweep.params = values
        cfg.sweep.tags = short_tags(values)
        cfg.sweep.started_at = time.time()
    _resume_requeued(cfg)
    return True


def _resume_requeued(cfg: DictConfig) -> None:
    """A trial started again in its own directory (SLURM requeue) resumes from last.ckpt."""
    if cfg.get("ckpt_path"):
        return
    last = Path(hydra_config().runtime.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("trial directory already holds %s: resuming from it", last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)


def record_failure(cfg: DictConfig, exc: BaseException, started: float) -> None:
    """Write the run's record with status "failed" (or "interrupted") and the reason."""
    if hydra_config() is None or not is_rank_zero():  # DDP: rank zero writes the record
        return
    record = failed_record(cfg, exc, started)
    try:
        previous = read_record(record.run_dir)
    except RecordError:
        previous = None
    if previous is not None and previous.status == "completed":
        return  # failed after its record was written (e.g. while finishing a logger)
    write_record(record.run_dir, record)


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # the next trial in this worker gets the GPU's memory back


def recorded(
    train: Callable[[DictConfig], Any], started: float | None = None
) -> Callable[[DictConfig], Any]:
    """`train`, leaving a record saying why in the run directory when it raises (its
    wall time from `started`, else from the call)."""

    def run(cfg: DictConfig) -> Any:
        since = time.time() if started is None else started
        try:
            return train(cfg)
        except BaseException as exc:
            try:
                record_failure(cfg, exc, since)
            except Exception as record_exc:  # pragma: no cover - the run's error matters more
                log.warning("could not record the failure in the run record: %s", record_exc)
            raise

    return run


def run_trial(train: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run `train(cfg)` as a run or sweep trial; a failure leaves a record saying why.
    A cross-validated run trains its folds here, each recorded in its own folder."""
    started = time.time()
    is_trial = start_trial(cfg)
    try:
        return recorded(_cross_validated(train), started)(cfg)
    finally:
        if is_trial:
            _free_memory()


def _cross_validated(train: Callable[[DictConfig], float]) -> Callable[[DictConfig], float]:
    """`train`, or with `sweep.cross_validate=true` every fold of it (after the checks)."""

    def run(cfg: DictConfig) -> float:
        check_cross_validation(cfg, hydra_config())
        if not cross_validates(cfg):
            return train(cfg)
        from autotimm.app.cross_validation import run_folds

        return run_folds(recorded(train), cfg, between=_free_memory)

    return run
