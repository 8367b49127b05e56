"""Sweeps sharing one Optuna study on a real PostgreSQL server (`make test-engines`).

Two sweep processes started at the same moment end with exactly n_trials (each asks for
a trial first, then counts the trials asked before it), with distinct values; a sweep
killed with SIGKILL mid-trial leaves a trial that the other process, or the same command
run again, marks interrupted and runs again.
"""

from __future__ import annotations

import pytest

from tests.engines_support import postgres_url, unique
from tests.shared_study import (
    check_a_killed_sweep_continues_when_run_again,
    check_a_killed_sweeps_trial_runs_again_in_the_other,
    check_two_sweeps_started_together,
)

pytestmark = pytest.mark.engines


def test_two_sweeps_started_together_run_exactly_n_trials(tmp_path):
    check_two_sweeps_started_together(tmp_path, postgres_url(), unique("together"))


def test_a_killed_sweep_s_trial_is_run_again_by_the_other_process(tmp_path):
    check_a_killed_sweeps_trial_runs_again_in_the_other(tmp_path, postgres_url(), unique("killed"))


def test_a_killed_sweep_continues_when_run_again(tmp_path):
    check_a_killed_sweep_continues_when_run_again(tmp_path, postgres_url(), unique("rerun"))
