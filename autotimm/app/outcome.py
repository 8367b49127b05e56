"""A run's outcome as a `RunRecord`: the objective found, completed and failed records.

`autotimm.app.run.train` builds the completed record; `autotimm.app.run_wrapper` the failed or
interrupted one. Both write it through `autotimm.records.results`.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autotimm.records.objectives import objective_specs
from autotimm.records.results import Objective, Pruned, RunRecord, SweepInfo, failure_reason
from autotimm.sweep.devices import current_claim, device_description
from autotimm.user_errors import UserError
from autotimm.utils import hydra_config, in_multirun


def is_rank_zero() -> bool:
    """False in the other processes of a DDP run (Lightning's rank, from the environment
    its launcher sets); they train with rank zero but write no record."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run_dir_and_overrides() -> tuple[Path, list[str]]:
    hc = hydra_config()
    return Path(hc.runtime.output_dir), list(hc.overrides.task)


def best_epoch(cfg: DictConfig, history: Any) -> dict[str, Any]:
    """The best validation epoch's row by the first objective (the last epoch when that
    objective is not a per-epoch metric, e.g. model/latency_ms)."""
    spec = objective_specs(cfg.optimized_metric, cfg.get("optimized_mode", "max"))[0]
    return history.best(spec.name, spec.mode) or {}


def add_objectives(record: RunRecord, cfg: DictConfig, trainer: Any) -> RunRecord:
    """Fill the record's objective(s) from its own numbers (`RunRecord.value`)."""
    found = []
    for spec in objective_specs(cfg.optimized_metric, cfg.get("optimized_mode", "max")):
        value = record.value(spec.name)
        if value is None and spec.name in trainer.callback_metrics:
            value = float(trainer.callback_metrics[spec.name])
        if value is None and trainer.is_global_zero:  # DDP: only rank zero measures the cost
            raise UserError(
                f"optimized_metric={spec.name!r} is neither logged nor in the run record; "
                f"logged: {sorted(trainer.callback_metrics)}; the record also has model/..., "
                "epochs, wall_time_s, train_images_per_s"
            )
        found.append(Objective(spec.name, value, spec.mode))
    record.objective = found[0]
    record.objectives = found if len(found) > 1 else []
    return record


def metric_values(metrics: dict[str, Any], prefix: str) -> dict[str, float | None]:
    """`prefix...` metrics as plain floats (NaN/inf as None, which JSON can hold)."""
    values: dict[str, float | None] = {}
    for key, value in metrics.items():
        if key.startswith(prefix):
            number = float(value)
            values[key] = number if math.isfinite(number) else None
    return values


def sweep_info(cfg: DictConfig) -> SweepInfo | None:
    """A sweep trial's bookkeeping (None for single runs)."""
    if not in_multirun():
        return None
    sweep = cfg.get("sweep") or {}
    claim = current_claim()
    info = SweepInfo(
        name=sweep.get("name"),
        trial=sweep.get("trial"),
        params=OmegaConf.to_container(sweep.params) if sweep.get("params") else {},
        worker_pid=os.getpid(),
        started_at=sweep.get("started_at"),
        finished_at=time.time(),
    )
    if claim is not None:
        info.gpu, info.gpu_simulated = claim.gpu, claim.simulated
        info.gpu_claimed_at = claim.claimed_at
    return info


def fold_of(cfg: DictConfig) -> dict[str, int | None]:
    """The run's k-fold fields (`fold`, `folds`; None without cross-validation or when
    the value is not a number: a failed run's record must not fail on its own config)."""
    try:
        data = cfg.get("data") or {}
        values = {key: data.get(key) for key in ("fold", "folds")}
    except Exception:  # an unresolvable data node: the run's own error says why
        return {"fold": None, "folds": None}
    return {
        k: v if isinstance(v, int) and not isinstance(v, bool) else None for k, v in values.items()
    }


def objective_of(cfg: DictConfig) -> Objective:
    """The (first) objective without a value, for runs that did not finish."""
    try:
        spec = objective_specs(cfg.get("optimized_metric"), cfg.get("optimized_mode", "max"))[0]
    except ValueError:  # the objective itself was the bad value
        return Objective(str(cfg.get("optimized_metric")), None, "max")
    return Objective(spec.name, None, spec.mode)


def measured_cost(cfg: DictConfig, model: Any, trainer: Any, datamodule: Any) -> Any:
    """The trained model's cost on the run's device (None with `measure_cost=false`)."""
    if not cfg.get("measure_cost", True) or not trainer.is_global_zero:
        return None  # DDP: measured once, by the process that writes the record
    from autotimm.model.cost import autocast_dtype, measure_cost

    return measure_cost(
        model,
        tuple(datamodule.data_config["input_size"]),
        trainer.strategy.root_device,  # Lightning's teardown moved the model to the CPU
        autocast=autocast_dtype(trainer.precision),
    )


def trained_record(
    cfg: DictConfig,
    trainer: Any,
    model: Any,
    datamodule: Any,
    best: dict[str, Any],
    test_metrics: dict[str, float | None],
    started: float,
    pruned: Pruned | None = None,
) -> RunRecord:
    """The record of a run that trained: completed (and tested), or pruned by its sweep."""
    run_dir, overrides = run_dir_and_overrides()
    checkpoint = trainer.checkpoint_callback
    best_path = (checkpoint.best_model_path if checkpoint is not None else "") or None
    throughput = next((c for c in trainer.callbacks if hasattr(c, "images_per_s")), None)
    images_per_s = getattr(throughput, "images_per_s", None)
    record = RunRecord(
        status="pruned" if pruned is not None else "completed",
        objective=objective_of(cfg),  # filled in by add_objectives
        run_dir=str(run_dir),
        overrides=overrides,
        wall_time_s=round(time.time() - started, 2),
        best_model_path=best_path,
        last_model_path=str(Path(best_path).parent / "last.ckpt") if best_path else None,
        val={k: v for k, v in best.items() if k.startswith("val/")},
        best_epoch=best.get("epoch"),
        test=test_metrics,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        train_images_per_s=round(images_per_s, 1) if images_per_s else None,
        num_classes=datamodule.num_classes,
        batch_size=int(datamodule.batch_size),
        compile=bool(cfg.get("compile")),
        pruned=pruned,
        # pruned trials are not measured: multi-objective studies cannot prune
        model=None if pruned else measured_cost(cfg, model, trainer, datamodule),
        sweep=sweep_info(cfg),
        **fold_of(cfg),
        **device_description(),
    )
    return add_objectives(record, cfg, trainer)


def failed_record(cfg: DictConfig, exc: BaseException, started: float) -> RunRecord:
    """The record of a run that raised: failed, or interrupted (Ctrl-C, a signal)."""
    run_dir, overrides = run_dir_and_overrides()
    try:
        device = device_description()
    except Exception:  # never hide the run's own error
        device = {"device": None, "gpu": None}
    return RunRecord(
        status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
        objective=objective_of(cfg),
        run_dir=str(run_dir),
        overrides=overrides,
        wall_time_s=round(time.time() - started, 2),
        failure=failure_reason(exc),
        traceback="".join(traceback.format_exception(exc)[-6:])[-4000:],
        sweep=sweep_info(cfg),
        **fold_of(cfg),
        **device,
    )
