"""The run behind `python train.py`: compose -> instantiate -> fit -> test -> results.json.

`train(cfg)` returns the objective (a float named by `optimized_metric`) so Hydra's
Optuna sweeper can optimise it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class UserError(ValueError):
    """A problem with the user's config or data (reported without a traceback)."""


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (null entries skipped)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def uses_cuda(cfg: DictConfig) -> bool:
    """True when the run's trainer will put the model on a CUDA device."""
    import torch

    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto")).lower()
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def prepare_model(model: Any, cfg: DictConfig) -> Any:
    """Fast defaults before fitting: channels_last weights on CUDA, optional torch.compile.

    Compiling is in place (``model.compile``), so state_dict keys carry no ``_orig_mod.``
    prefix and checkpoints load into compiled and uncompiled models alike.
    """
    import torch

    if cfg.get("channels_last", True) and uses_cuda(cfg):
        model = model.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        model.compile(mode=cfg.get("compile_mode", "default"))
    return model


def tune_batch_size(trainer: Any, model: Any, datamodule: Any) -> int:
    """Set ``datamodule.batch_size`` to the largest power of two (from the configured one)
    that trains without running out of memory (Lightning's batch-size finder, a few steps
    per size, model and trainer restored afterwards)."""
    from lightning.pytorch.tuner import Tuner

    found = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="power", init_val=int(datamodule.batch_size)
    )
    log.info("batch size finder: training with batch size %s", datamodule.batch_size)
    return int(found or datamodule.batch_size)


def _resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _num_classes(cfg: DictConfig, datamodule: Any) -> int:
    from_data = datamodule.num_classes  # loads the data; the datamodule checks data.num_classes
    wanted = cfg.model.get("num_classes")
    if wanted is not None and int(wanted) != from_data:
        raise UserError(
            f"model.num_classes={wanted} but the data has {from_data} classes "
            "(leave it null to take the number from the data)"
        )
    return from_data


def _metric_values(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    values = {}
    for key, value in metrics.items():
        if key.startswith(prefix):
            number = float(value)
            values[key] = number if math.isfinite(number) else None
    return values


def train(cfg: DictConfig) -> float:
    """One training run. Writes results.json to the run directory; returns the objective."""
    import lightning as L
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from autotimm.callbacks import TrainThroughput, ValidationHistory
    from autotimm.console import print_config_tree
    from autotimm.results import device_description, write_results
    from autotimm.callbacks import NonFiniteLossGuard
    from autotimm.run_wrapper import sweep_fields

    started = time.time()
    # Lightning 2.6 warns about its own use of torch's pytree API on every step; nothing a
    # user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    if cfg.get("print_config", True):
        print_config_tree(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer

    datamodule = instantiate(cfg.data)
    num_classes = _num_classes(cfg, datamodule)
    model = instantiate(cfg.model, num_classes=num_classes, class_names=datamodule.class_names)
    model = prepare_model(model, cfg)

    callbacks = instantiate_each(cfg.get("callbacks"))
    history = ValidationHistory()
    callbacks.append(history)
    callbacks.append(NonFiniteLossGuard())  # NaN/inf loss: the run (sweep trial) fails early
    throughput = next((c for c in callbacks if isinstance(c, TrainThroughput)), None)
    loggers = instantiate_each(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    # Loggers get the full resolved config instead of Lightning's copy of the model's
    # hparams, whose short keys (optimizer: adamw) would overwrite the config's groups.
    model._log_hyperparams = False
    for logger in loggers:
        logger.log_hyperparams(_resolved_config(cfg))

    failed = True
    try:
        if cfg.get("tune_batch_size"):
            tune_batch_size(trainer, model, datamodule)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        objective_name = cfg.optimized_metric
        mode = cfg.get("optimized_mode", "max")
        best = history.best(objective_name, mode) or {}
        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        objective = best.get(objective_name)
        if objective is None and objective_name in trainer.callback_metrics:
            objective = float(trainer.callback_metrics[objective_name])
        if objective is None:
            raise UserError(
                f"optimized_metric={objective_name!r} was never logged; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        test_metrics: dict[str, float] = {}
        if cfg.get("test", True):
            ckpt = best_path if best_path else None
            test_out = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            test_metrics = _metric_values(test_out[0] if test_out else {}, "test/")
        results = {
            "objective": {"name": objective_name, "value": float(objective), "mode": mode},
            "best_model_path": best_path or None,
            "last_model_path": (str(Path(best_path).parent / "last.ckpt") if best_path else None),
            "val": {k: v for k, v in best.items() if k.startswith("val/")},
            "best_epoch": best.get("epoch"),
            "test": test_metrics,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.time() - started, 2),
            "train_images_per_s": (
                round(throughput.images_per_s, 1)
                if throughput is not None and throughput.images_per_s
                else None
            ),
            **device_description(),
            "num_classes": num_classes,
            # the batch size trained with (tune_batch_size=true may have changed it)
            "batch_size": int(datamodule.batch_size),
            "compile": bool(cfg.get("compile")),
            "overrides": overrides,
            "run_dir": str(run_dir),
            **sweep_fields(cfg),  # sweeps: trial number, swept values, GPU claim, times
            "status": "completed",
        }
        write_results(run_dir, results)
        _summarise(loggers, results)
        failed = False
        log.info("objective %s = %.4f (run dir: %s)", objective_name, objective, run_dir)
        return float(objective)
    finally:
        finish_loggers(loggers, failed)


def _summarise(loggers: list[Any], results: dict[str, Any]) -> None:
    """Best metrics into the W&B summary (the table and parallel-coordinates views use it).

    Keys: `objective`, `best/val/...` (the best epoch's validation metrics), `test/...`.
    """
    summary = {
        "objective": results["objective"]["value"],
        **{f"best/{key}": value for key, value in results["val"].items()},
        **results["test"],
        **{k: results[k] for k in ("epochs", "wall_time_s", "train_images_per_s", "gpu")},
    }
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update(summary)


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


def main(cfg: DictConfig) -> float | None:
    """train.py's entry: user errors print one short message in single runs.

    In a multirun (sweep) errors propagate, so the sweeper records the trial as failed.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from autotimm.run_wrapper import run_trial

    try:
        # sweeps: claim this trial's GPU first; failures leave a results.json with the reason
        return run_trial(train, cfg)
    except Exception as exc:
        user_error = find_user_error(exc)
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        if user_error is None or full_error or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        from autotimm.console import print_user_error

        print_user_error(user_error)
        sys.exit(1)


def find_user_error(exc: BaseException) -> BaseException | None:
    """The config/data problem behind `exc` (unwrapping Hydra's instantiate errors), if any."""
    from omegaconf.errors import OmegaConfBaseException

    from autotimm.data.files import CorruptImageError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen, (ValueError, FileNotFoundError, CorruptImageError, OmegaConfBaseException)
        ):
            return seen
        if isinstance(seen, RuntimeError) and "could not be fetched offline" in str(seen):
            return seen
        seen = seen.__cause__
    return None
