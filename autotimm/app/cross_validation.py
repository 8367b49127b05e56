"""A cross-validated run (`sweep.cross_validate=true`): every fold, one after another, in this job.

`run_folds(train_fold, cfg)` trains folds 0..data.folds-1 of the run's configuration, each
as a run of its own in `<run dir>/fold_<f>/`: its results.json (with `fold` and `folds`),
checkpoints, logs, and a `.hydra/` with the fold's config and overrides, so that
`python -m autotimm.compare` and its best_config see every fold as a run. The folds run
inside the trial's own job, so this works on every launcher (the joblib pool, SLURM, Ray).

In a sweep trial each fold's objective is reported to the trial's Optuna trial with the
fold as the step and, when the sweeper has a pruner, the pruner is asked after every fold
but the last; a pruned trial stops there (WilcoxonPruner: significantly worse than the
best trial on the folds both ran). The run's own record (results.json in the trial
directory) has the mean objective over the folds it ran, `fold_values` (one per fold),
the mean of every val/test metric, and status `completed` or `pruned` (`pruned.fold`: the
last fold run). The mean is the run's return value: a sweep's objective.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from autotimm.app.outcome import is_rank_zero, run_dir_and_overrides, sweep_info
from autotimm.records.results import (
    Objective,
    Pruned,
    RecordError,
    RunRecord,
    read_record,
    write_record,
)
from autotimm.sweep.cross_validation import KEY, fold_dir_name
from autotimm.user_errors import UserError
from autotimm.utils import hydra_config

log = logging.getLogger(__name__)


def run_folds(
    train_fold: Callable[[DictConfig], Any],
    cfg: DictConfig,
    between: Callable[[], None] = lambda: None,
) -> float:
    """Train every fold (`train_fold(fold_cfg)` writes the fold's record), report each to
    the trial, stop when pruned; write the run's record and return the mean objective.
    `between` runs after each fold (frees the GPU's memory)."""
    from autotimm.sweep.pruning import trial_handle

    hc = hydra_config()
    if hc is None:
        raise UserError(f"{KEY}=true needs a Hydra run (python train.py): folds get its folders")
    run_dir, folds = Path(hc.runtime.output_dir), int(cfg.data.folds)
    # a sweep trial reports every fold (also without a pruner: a study continued with
    # one needs them); None in single runs and grid sweeps
    handle = trial_handle(cfg, needs_pruner=False)
    started, done, pruned_at = time.time(), [], None
    for fold in range(folds):
        done.append(_fold(train_fold, cfg, fold, run_dir))
        between()
        value = float(done[-1].objective.value)
        log.info(
            "fold %d of %d: %s = %.4g (mean so far %.4g)",
            fold + 1,
            folds,
            done[-1].objective.name,
            value,
            statistics.fmean(float(r.objective.value) for r in done),
        )
        # the last fold is reported, never judged: stopping there saves nothing
        if handle is not None and handle.report(value, fold, judge=fold < folds - 1):
            pruned_at = fold
            log.info("trial %d pruned after fold %d of %d", handle.number, fold + 1, folds)
            break
    record = cross_validated_record(cfg, done, started, pruned_at)
    if is_rank_zero():
        write_record(run_dir, record)
    found = record.objective
    log.info("objective %s = %.4g: the mean of %s", found.name, found.value, record.fold_values)
    return float(record.objective.value)


def _fold(
    train_fold: Callable[[DictConfig], Any], cfg: DictConfig, fold: int, run_dir: Path
) -> RunRecord:
    """Fold `fold` trained in its own folder (one a requeued trial finished is kept)."""
    fold_dir = run_dir / fold_dir_name(fold)
    finished = _finished(fold_dir)
    if finished is not None:
        log.info("fold %d: keeping its finished run in %s", fold, fold_dir)
        return finished
    fold_cfg = fold_config(cfg, fold, fold_dir)
    with in_fold_dir(fold_dir, fold) as overrides:
        _save_hydra(fold_cfg, overrides, fold_dir)
        try:
            train_fold(fold_cfg)
        except BaseException:
            log.error("fold %d failed (its record: %s); the run stops", fold, fold_dir)
            raise
        record = read_record(fold_dir)
    if record is None or record.objective.value is None:
        raise RuntimeError(f"fold {fold} of {fold_dir.parent} recorded no objective")
    return record


def _finished(fold_dir: Path) -> RunRecord | None:
    try:
        record = read_record(fold_dir)
    except RecordError:
        return None
    if record is None or record.status != "completed" or record.objective.value is None:
        return None
    return record


def fold_config(cfg: DictConfig, fold: int, fold_dir: Path) -> DictConfig:
    """The run's config for one fold: `data.fold`, and the fold's own last.ckpt when a
    requeued trial finds one (it resumes that fold)."""
    fold_cfg = copy.deepcopy(cfg)
    last = fold_dir / "checkpoints" / "last.ckpt"
    with open_dict(fold_cfg):
        fold_cfg.data.fold = fold
        if last.is_file():
            log.info("fold %d: resuming from %s", fold, last)
            fold_cfg.ckpt_path = str(last)
    return fold_cfg


@contextmanager
def in_fold_dir(fold_dir: Path, fold: int) -> Iterator[list[str]]:
    """Hydra's run directory and overrides are the fold's while it trains (checkpoints,
    loggers and the record follow `hydra.runtime.output_dir`); yields the overrides."""
    hc = hydra_config()
    saved = (hc.runtime.output_dir, list(hc.overrides.task), hc.job.override_dirname)
    setting = f"data.fold={fold}"
    overrides = [*saved[1], setting]
    with read_write(hc):
        hc.runtime.output_dir = str(fold_dir)
        hc.overrides.task = overrides
        hc.job.override_dirname = ",".join(filter(None, [saved[2], setting]))  # W&B names
    try:
        yield overrides
    finally:
        with read_write(hc):
            hc.runtime.output_dir, hc.overrides.task, hc.job.override_dirname = saved


def _save_hydra(fold_cfg: DictConfig, overrides: list[str], fold_dir: Path) -> None:
    """The fold as a run of its own, as Hydra records a job: `.hydra/config.yaml` (with
    cross_validate off, so re-running it trains this fold) and `.hydra/overrides.yaml`."""
    config = copy.deepcopy(fold_cfg)
    with open_dict(config):
        config.sweep.cross_validate = False
        config.ckpt_path = None
    folder = fold_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))


def _means(sections: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each metric's mean over the folds (None unless every fold has a finite value)."""
    names = list(dict.fromkeys(name for section in sections for name in section))
    means: dict[str, float | None] = {}
    for name in names:
        values = [section.get(name) for section in sections]
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        means[name] = statistics.fmean(values) if finite else None  # type: ignore[arg-type]
    return means


def cross_validated_record(
    cfg: DictConfig, done: list[RunRecord], started: float, pruned_at: int | None
) -> RunRecord:
    """The run's record: the mean over the folds it ran (`fold_values`), pruned or completed."""
    from autotimm.sweep.devices import device_description

    values = [float(r.objective.value) for r in done]  # type: ignore[arg-type]
    mean = statistics.fmean(values)
    first, last = done[0], done[-1]
    run_dir, overrides = run_dir_and_overrides()
    pruned = None
    if pruned_at is not None:
        pruned = Pruned(epoch=max(0, (last.epochs or 1) - 1), value=mean, fold=pruned_at)
    return RunRecord(
        status="pruned" if pruned is not None else "completed",
        objective=Objective(first.objective.name, mean, first.objective.mode),
        run_dir=str(run_dir),
        overrides=overrides,
        wall_time_s=round(time.time() - started, 2),
        val=_means([r.val for r in done]),
        test=_means([r.test for r in done]),
        num_classes=first.num_classes,
        batch_size=first.batch_size,
        compile=first.compile,
        folds=int(cfg.data.folds),
        fold_values=values,
        pruned=pruned,
        model=last.model,
        sweep=sweep_info(cfg),
        **device_description(),
    )
