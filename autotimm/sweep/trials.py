"""What a sweep records about its trials in the Optuna study, and the failure policy.

Trial user attributes (the names below), counting trials against `n_trials`, a finished
trial's value or failure reason, and when too many failures stop the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna import Study
from optuna.trial import FrozenTrial, TrialState

from autotimm.records.results import RecordError, failure_reason, read_record
from autotimm.sweep import plugin_api

MIN_TRIALS_FOR_RATE = 3  # max_failure_rate is judged once this many trials finished

# trial user attributes
ATTR_HOST, ATTR_PID, ATTR_HEARTBEAT = "sweep_host", "sweep_pid", "sweep_heartbeat"
ATTR_FAILURE, ATTR_INTERRUPTED, ATTR_RUN_DIR = "failure", "interrupted", "run_dir"
ATTR_FIXED = "fixed_overrides"  # the sweep's fixed values (autotimm.sweep.identity)
ATTR_JOB = "sweep_job"  # the trial's job on its engine, e.g. "slurm:1234"
ATTR_SURPLUS = "surplus"  # asked beyond n_trials by a sweep process that lost the race


class SweepFailedError(RuntimeError):
    """Too many trials failed (more than max_failure_rate of the finished ones)."""


def trial_dir_name(number: int) -> str:
    return f"trial_{number:04d}"


@dataclass
class StudyCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # genuine failures (not interruptions)
    interrupted: int = 0
    running: int = 0
    waiting: int = 0
    surplus: int = 0  # asked beyond n_trials and failed at once: never ran

    @property
    def finished(self) -> int:
        """Trials that count against n_trials."""
        return self.complete + self.pruned + self.failed


def count_trials(trials: Sequence[FrozenTrial]) -> StudyCounts:
    counts = StudyCounts()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.state == TrialState.FAIL:
            if trial.user_attrs.get(ATTR_SURPLUS):
                counts.surplus += 1
            elif trial.user_attrs.get(ATTR_INTERRUPTED):
                counts.interrupted += 1
            else:
                counts.failed += 1
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
    return counts


def failures(study: Study) -> list[tuple[int, dict[str, Any], str]]:
    """(number, values, reason) of every failed or interrupted trial."""
    return [
        (t.number, dict(t.params), str(t.user_attrs.get(ATTR_FAILURE, "unknown")))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if not t.user_attrs.get(ATTR_SURPLUS)
    ]


def within_n_trials(study: Study, number: int, n_trials: int) -> bool:
    """Whether trial `number`, just asked, is one of the study's n_trials.

    Ask first, then count: the trials asked before it (lower numbers: the storage numbers
    trials in the order they are created) that finished or run must leave it a place. Two
    sweep processes that ask at the same moment both see the earlier one, so exactly one
    of them gets the last place (counting first, then asking, both would take it).
    """
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    counts = count_trials(earlier)
    return counts.finished + counts.running < n_trials


def listed(found: list[tuple[int, dict[str, Any], str]]) -> str:
    return "; ".join(f"trial {number}: {reason}" for number, _, reason in found)


def objective_values(returned: Any) -> tuple[float | list[float] | None, str | None]:
    """(value, None), or one value per objective; (None, why) when the run returned none."""
    many = isinstance(returned, (list, tuple))
    try:
        values = [float(v) for v in returned] if many else [float(returned)]
    except (TypeError, ValueError):
        return None, f"the run returned {returned!r}, not an objective value"
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return None, f"the objective is {bad[0]}"
    return (values if many else values[0]), None


def trial_value(
    ret: Any, error: BaseException | None, run_dir: str
) -> tuple[float | list[float] | None, str | None]:
    """(objective value(s), None) of a completed trial, else (None, why it failed).

    `ret` is the job's JobReturn, or None when the launch itself failed (a worker process
    died): then the trial's own record says how far it got.
    """
    if ret is not None:
        failed = plugin_api.job_error(ret)
        if failed is not None:
            return None, failure_reason(failed)
        return objective_values(ret.return_value)
    try:
        record = read_record(run_dir)
    except RecordError:
        record = None
    if record is not None and record.status in ("completed", "pruned"):
        objectives = record.objectives or [record.objective]
        if all(o.value is not None for o in objectives):
            values = [float(o.value) for o in objectives]
            return (values if record.objectives else values[0]), None
    reason = (record.failure if record else None) or failure_reason(error or RuntimeError("?"))
    return None, f"trial process died: {reason}"


def was_pruned(run_dir: str) -> bool:
    """Whether the trial's record says its pruner stopped it (autotimm.sweep.pruning)."""
    try:
        record = read_record(run_dir)
    except RecordError:
        return False
    return record is not None and record.status == "pruned"


def failure_rate_exceeded(
    study: Study, max_failure_rate: float, n_trials: int
) -> SweepFailedError | None:
    """The error that stops the sweep, once more than max_failure_rate of its trials failed.

    max_failure_rate=0 stops at the first failure; otherwise the rate is judged once
    MIN_TRIALS_FOR_RATE trials (or all n_trials) finished.
    """
    counts = count_trials(study.get_trials(deepcopy=False))
    if counts.failed == 0:
        return None
    finished = counts.finished
    rate = counts.failed / max(1, finished)
    judged = finished >= min(MIN_TRIALS_FOR_RATE, n_trials)
    if max_failure_rate == 0.0 or (judged and rate > max_failure_rate):
        return SweepFailedError(
            f"sweep stopped: {counts.failed} of {finished} finished trials failed "
            f"(max_failure_rate={max_failure_rate}); " + listed(failures(study)[-5:])
        )
    return None
