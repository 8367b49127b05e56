"""Sweep processes sharing one Optuna study, whatever its storage: run by the PostgreSQL
tests of `make test-engines` (tests/test_engines_postgres.py) and, on a journal file that
needs no server, by the default suite (tests/test_journal_storage.py).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from autotimm.sweep.trials import count_trials
from tests.engines_support import finish, hold_trial, load_study, start_sweep, wait_until
from tests.test_sweeps import TINIEST, sweep_dir


def shared(name: str, url: str, n_trials: int) -> list[str]:
    return [
        "+sweeps=quick",
        f"sweep.name={name}",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.n_trials={n_trials}",
        "sweep.n_jobs=1",
        *TINIEST,
    ]


def check_two_sweeps_started_together(tmp_path: Path, url: str, name: str) -> None:
    """Two sweep processes started at the same moment end with exactly n_trials, distinct
    values, both taking part."""
    args = shared(name, url, 4)
    procs = [start_sweep(tmp_path, *args, log=f"sweep{i}") for i in range(2)]
    outputs = [finish(p, tmp_path, log=f"sweep{i}") for i, p in enumerate(procs)]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-4000:]
    trials = load_study(name, url).get_trials()
    counts = count_trials(trials)
    assert counts.complete == 4 and counts.finished == 4 and counts.running == 0
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    values = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(values)) == 4  # no two trials with the same parameters
    pids = Counter(t.user_attrs["sweep_pid"] for t in complete)
    assert set(pids) == {p.pid for p in procs}  # both took part


def kill_group(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)


def check_a_killed_sweeps_trial_runs_again_in_the_other(tmp_path: Path, url: str, name: str):
    """Sweep A holds in trial 0; B starts on the study; A is killed with SIGKILL: B marks
    A's trial interrupted, runs its values again, and the study ends with n_trials."""
    folder = sweep_dir(tmp_path, name)
    a = start_sweep(tmp_path, *shared(name, url, 3), *hold_trial(0), log="a")
    wait_until(lambda: (folder / "trial_0000" / ".hydra").is_dir(), 240, "trial 0", a)
    b = start_sweep(tmp_path, *shared(name, url, 3), *hold_trial(0), log="b")
    wait_until(lambda: (folder / "trial_0001" / ".hydra").is_dir(), 240, "B's first trial", b)
    kill_group(a.pid)
    a.wait()
    output = finish(b, tmp_path, log="b")
    assert b.returncode == 0, output[-4000:]
    trials = load_study(name, url).get_trials()
    interrupted = trials[0]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["interrupted"] is True
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    assert interrupted.params in [t.params for t in complete]  # its values ran again
    assert "were interrupted by an earlier sweep" in output


def check_a_killed_sweep_continues_when_run_again(tmp_path: Path, url: str, name: str) -> None:
    """The only sweep on the study killed with SIGKILL mid-trial: the same command run
    again keeps the finished trial, marks the killed one interrupted and runs its values."""
    folder = sweep_dir(tmp_path, name)
    args = shared(name, url, 2)
    first = start_sweep(tmp_path, *args, *hold_trial(1), log="first")
    wait_until(lambda: (folder / "trial_0001" / ".hydra").is_dir(), 240, "trial 1", first)
    kill_group(first.pid)
    first.wait()
    assert load_study(name, url).get_trials()[1].state.name == "RUNNING"
    again = start_sweep(tmp_path, *args, *hold_trial(1), log="again")
    output = finish(again, tmp_path, log="again")
    assert again.returncode == 0, output[-4000:]
    trials = load_study(name, url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["interrupted"] is True
    assert trials[2].params == trials[1].params
