"""autotimm.sweep.trials and the study sweeper's settings: a trial's value or failure
reason (from its JobReturn, or its run record when the worker died) and the failure policy."""

from __future__ import annotations

import pytest

from autotimm.records.results import Objective, RunRecord, record_path, write_record
from autotimm.sweep import trials


def completed_job(value):
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(status=JobStatus.COMPLETED, _return_value=value)


def test_value_of_a_returned_job(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    assert trials.trial_value(completed_job(0.75), None, str(tmp_path)) == (0.75, None)
    value, reason = trials.trial_value(completed_job("oops"), None, str(tmp_path))
    assert value is None and "returned 'oops', not an objective value" in reason
    assert trials.trial_value(completed_job(float("nan")), None, str(tmp_path))[1] == (
        "the objective is nan"
    )
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("lr=-0.1"))
    assert trials.trial_value(failed, None, str(tmp_path)) == (None, "ValueError: lr=-0.1")


def test_a_dead_worker_is_judged_by_the_trials_record(tmp_path):
    died = OSError("worker killed")
    value, reason = trials.trial_value(None, died, str(tmp_path / "no_record"))
    assert value is None and reason == "trial process died: OSError: worker killed"

    done = tmp_path / "done"
    write_record(done, RunRecord("completed", Objective("val/accuracy", 0.9), str(done)))
    assert trials.trial_value(None, died, str(done)) == (0.9, None)  # it finished first

    failed = tmp_path / "failed"
    record = RunRecord("failed", Objective("val/accuracy"), str(failed), failure="MemoryError: x")
    write_record(failed, record)
    assert trials.trial_value(None, died, str(failed)) == (
        None,
        "trial process died: MemoryError: x",
    )

    broken = tmp_path / "broken"
    write_record(broken, RunRecord("completed", Objective("val/accuracy", 0.9), str(broken)))
    record_path(broken).write_text("{half a file")
    assert trials.trial_value(None, died, str(broken))[1] == (
        "trial process died: OSError: worker killed"
    )


def _study(states: list[str]):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for state in states:
        trial = study.ask()
        if state == "fail":
            trial.set_user_attr(trials.ATTR_FAILURE, "ValueError: bad")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, 0.5)
    return study


def test_failure_policy():
    assert trials.failure_rate_exceeded(_study(["ok", "ok"]), 0.5, 10) is None
    assert trials.failure_rate_exceeded(_study(["fail"]), 0.5, 10) is None  # too early to judge
    stopped = trials.failure_rate_exceeded(_study(["ok", "fail", "fail"]), 0.5, 10)
    assert isinstance(stopped, trials.SweepFailedError)
    assert "2 of 3 finished trials failed" in str(stopped) and "trial 1: ValueError" in str(stopped)
    assert trials.failure_rate_exceeded(_study(["ok", "fail"]), 0.0, 10) is not None  # strict
    assert trials.failure_rate_exceeded(_study(["ok", "ok", "fail"]), 0.5, 10) is None
    counts = trials.count_trials(_study(["ok", "fail"]).get_trials())
    assert (counts.complete, counts.failed, counts.finished) == (1, 1, 2)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_max_failure_rate_out_of_range_is_refused(rate):
    from autotimm.sweep.study import StudySweeper

    with pytest.raises(ValueError, match=rf"max_failure_rate={rate} not accepted.*0\.0.*1\.0"):
        StudySweeper(None, "maximize", None, "s", 4, rate, None, None, None)


def test_a_pruner_needs_a_study_name():
    import optuna

    from autotimm.sweep.study import StudySweeper

    sweeper = StudySweeper(
        None, "maximize", None, None, 4, 0.0, None, None, optuna.pruners.MedianPruner()
    )
    with pytest.raises(
        ValueError, match=r"^hydra.sweeper.study_name=null with a pruner: .*pruner=none$"
    ):
        sweeper.setup(hydra_context=None, task_function=None, config=None)  # before anything


def test_two_processes_asking_for_the_last_place_get_it_once(tmp_path):
    """Two sweep processes (two Study objects on one storage, as two processes hold) both
    counted 2 of n_trials=3 finished and asked: exactly one trial goes ahead; the other is
    failed as surplus, does not count, and the values queued for it are queued again."""
    import optuna

    from autotimm.sweep.recovery import give_back

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for value in (0.1, 0.2):
        first.tell(first.ask(), value)
    second = optuna.load_study(study_name="s", storage=url)
    mine = first.ask()
    first.enqueue_trial({"x": 0.5})  # e.g. an interrupted trial's values
    theirs = second.ask()  # takes the queued values
    queued = second.get_trials()[theirs.number].system_attrs["fixed_params"]
    assert theirs.number > mine.number and queued == {"x": 0.5}
    assert trials.within_n_trials(first, mine.number, 3)
    assert not trials.within_n_trials(second, theirs.number, 3)
    give_back(second, theirs)

    stored = first.get_trials()
    counts = trials.count_trials(stored)
    assert (counts.finished, counts.running, counts.surplus, counts.waiting) == (2, 1, 1, 1)
    assert stored[theirs.number].user_attrs[trials.ATTR_SURPLUS] is True
    assert trials.failures(first) == []  # not a failure of the sweep
    assert stored[-1].system_attrs["fixed_params"] == {"x": 0.5}  # queued again
    # counting first, then asking (the old way), both would have gone ahead
    assert trials.count_trials(stored[: mine.number]).finished == 2
