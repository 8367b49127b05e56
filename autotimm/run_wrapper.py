"""The trial side of a sweep: GPU claim, swept values and tags, the record of a failed trial.

`run_trial(train, cfg)` wraps a run. Outside a multirun it only records failures;
in a multirun (a sweep trial) it first claims this process's GPU (before anything
touches CUDA), puts the trial's swept values into `sweep.params` and short W&B tags
into `sweep.tags` (conf/logger/wandb.yaml reads them), and resumes from the trial's
own `last.ckpt` when a requeued trial (SLURM preemption/timeout) finds one.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from autotimm.devices import claim_gpu, current_claim

log = logging.getLogger(__name__)

MAX_TAG = 64  # W&B's limit on one tag


def _hydra() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    from hydra.types import RunMode

    hc = _hydra()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def swept_values(cfg: DictConfig) -> dict[str, Any]:
    """The values of the keys the sweeper varies (`hydra.sweeper.params`), for this trial."""
    hc = _hydra()
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
    claim = claim_gpu()  # first: before anything initialises CUDA
    if "sweep" not in cfg:
        return True
    values = swept_values(cfg)
    with open_dict(cfg):
        cfg.sweep.params = values
        cfg.sweep.tags = short_tags(values)
        cfg.sweep.worker_pid = os.getpid()
        cfg.sweep.started_at = time.time()
        if claim is not None:
            cfg.sweep.gpu = claim.gpu
    _resume_requeued(cfg)
    return True


def _resume_requeued(cfg: DictConfig) -> None:
    """A trial started again in its own directory (SLURM requeue) resumes from last.ckpt."""
    if cfg.get("ckpt_path"):
        return
    hc = _hydra()
    last = Path(hc.runtime.output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("trial directory already holds %s: resuming from it", last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)


def sweep_fields(cfg: DictConfig) -> dict[str, Any]:
    """results.json's `sweep` entry for a trial ({} for single runs)."""
    if not in_multirun():
        return {}
    sweep = cfg.get("sweep") or {}
    claim = current_claim()
    record = {
        "name": sweep.get("name"),
        "trial": sweep.get("trial"),
        "params": OmegaConf.to_container(sweep.params) if sweep.get("params") else {},
        "worker_pid": os.getpid(),
        "started_at": sweep.get("started_at"),
        "finished_at": time.time(),
    }
    if claim is not None:
        record.update(claim.as_dict())
    return {"sweep": record}


_INNER_ERROR = re.compile(r"\b(\w+(?:Error|Exception|Interrupt)): (.+?)(?: -{4,}|$)")


def failure_reason(exc: BaseException, limit: int = 1000) -> str:
    """`TypeName: message` on one line, short enough for a table and a study attribute.

    Errors that carry another process's traceback as text (submitit's FailedJobError)
    are reduced to that traceback's last error line.
    """
    message = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {message}"
    if "Traceback (most recent call last)" in message:
        inner = _INNER_ERROR.findall(message)
        if inner:
            name, detail = inner[-1]
            text = f"{type(exc).__name__}: {name}: {detail.strip()}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_failure(cfg: DictConfig, exc: BaseException, started: float) -> None:
    """Write results.json with status "failed" (or "interrupted") and the reason."""
    from autotimm.results import device_description, read_results, write_results

    hc = _hydra()
    if hc is None:
        return
    run_dir = Path(hc.runtime.output_dir)
    previous = read_results(run_dir) if run_dir.is_dir() else None
    if previous is not None and previous.get("status") == "completed":
        return  # failed after its results were written (e.g. while finishing a logger)
    interrupted = isinstance(exc, KeyboardInterrupt)
    try:
        device = device_description()
    except Exception:  # never hide the trial's own error
        device = {"device": None, "gpu": None}
    results = {
        "objective": {
            "name": cfg.get("optimized_metric"),
            "value": None,
            "mode": cfg.get("optimized_mode", "max"),
        },
        "status": "interrupted" if interrupted else "failed",
        "failure": failure_reason(exc),
        "traceback": "".join(traceback.format_exception(exc)[-6:])[-4000:],
        "wall_time_s": round(time.time() - started, 2),
        **device,
        "overrides": list(hc.overrides.task),
        "run_dir": str(run_dir),
        **sweep_fields(cfg),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_results(run_dir, results)


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # the next trial in this worker gets the GPU's memory back


def run_trial(train: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run `train(cfg)` as a run or sweep trial; a failure leaves a results.json saying why."""
    started = time.time()
    is_trial = start_trial(cfg)
    try:
        return train(cfg)
    except BaseException as exc:
        try:
            record_failure(cfg, exc, started)
        except Exception as record_exc:  # pragma: no cover - the trial's error matters more
            log.warning("could not record the failure in results.json: %s", record_exc)
        raise
    finally:
        if is_trial:
            _free_memory()
