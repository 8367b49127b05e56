"""The end of a sweep: its outcome logged and written to `optimization_results.yaml`.

Single-objective studies: the best trial (`best_params`, `best_value`, ...). Several
objectives: `solutions`, the Pareto front's trials with their params and values (as
hydra-optuna-sweeper writes it), and `optimized_metric`, the objectives' names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from autotimm.sweep.storage import masked
from autotimm.sweep.trials import ATTR_RUN_DIR, StudyCounts, count_trials, failures

log = logging.getLogger(__name__)

RESULTS_YAML = "optimization_results.yaml"


def _best(study: optuna.Study, names: list[str]) -> dict[str, Any]:
    if len(study.directions) == 1:
        best = study.best_trial
        log.info("Best value: %s (trial %d)", best.value, best.number)
        log.info("Best parameters: %s", best.params)
        return {
            "best_params": best.params,
            "best_value": best.value,
            "best_trial": best.number,
            "best_run_dir": best.user_attrs.get(ATTR_RUN_DIR),
        }
    front = sorted(study.best_trials, key=lambda t: t.number)
    log.info("Pareto front (%s): trial(s) %s", ", ".join(names), [t.number for t in front])
    return {
        "solutions": [
            {
                "trial": t.number,
                "params": t.params,
                "values": list(t.values),
                "run_dir": t.user_attrs.get(ATTR_RUN_DIR),
            }
            for t in front
        ]
    }


def write_summary(
    study: optuna.Study, storage: Any, n_trials: int, names: list[str], folder: Path
) -> StudyCounts:
    """Log the outcome and write `optimization_results.yaml` (best or front, counts, failures)."""
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials)
    failed = failures(study)
    summary: dict[str, Any] = {"name": "optuna"}
    if any(t.state == TrialState.COMPLETE for t in trials):
        summary.update(_best(study, names))
    directions = [d.name.lower() for d in study.directions]
    summary.update(
        study_name=study.study_name,
        storage=masked(storage),
        direction=directions[0] if len(directions) == 1 else directions,
        optimized_metric=names[0] if len(names) == 1 else names,
        n_trials=n_trials,
        trials={
            "complete": counts.complete,
            "failed": counts.failed,
            "interrupted": counts.interrupted,
            "pruned": counts.pruned,
            "running": counts.running,
        },
        failures=[{"trial": n, "params": p, "reason": r} for n, p, r in failed],
    )
    if failed:
        log.warning("%d failed or interrupted trial(s):", len(failed))
        for number, params, reason in failed:
            log.warning("  trial %d %s: %s", number, params, reason)
    OmegaConf.save(OmegaConf.create(summary), folder / RESULTS_YAML)
    return counts
