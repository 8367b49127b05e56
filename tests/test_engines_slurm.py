"""Sweeps on a real one-node SLURM cluster (`make test-engines`; tests/engines_support.py).

Through the project's `hydra/launcher=slurm_gpu` with its resources sized down: each
trial its own job with its own (fake GRES) GPU, asynchronous submission, sacct's states,
a requeued trial resuming from its own last.ckpt, and requests the cluster refuses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from autotimm.records.results import read_record
from tests.engines_support import (
    RECORD_ENV,
    SLURM_SMALL,
    finish,
    hold_trial,
    need_slurm,
    sacct_states,
    start_sweep,
    wait_until,
)
from tests.test_async_engines import spans_overlap
from tests.test_sweeps import TINIEST, load_study, sweep, sweep_dir

pytestmark = pytest.mark.engines


@pytest.fixture(autouse=True)
def _slurm():
    need_slurm()


def test_slurm_sweep_one_job_and_gpu_per_trial_asynchronous(tmp_path):
    """3 trials, 2 at once: each its own job and GPU; trial 0 holds until trial 2 started,
    which happens only if trial 2 goes out as soon as trial 1 ends (not in batches)."""
    gate = [
        "+callbacks.gate._target_=tests.test_async_engines.WaitForTrial",
        "+callbacks.gate.trial=0",
        "+callbacks.gate.successor=2",
        "+callbacks.gate.timeout_s=150",
    ]
    proc = start_sweep(
        tmp_path,
        "+sweeps=quick",
        *SLURM_SMALL,
        "sweep.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        *TINIEST,
        *RECORD_ENV,
        *gate,
    )
    output = finish(proc, tmp_path)
    assert proc.returncode == 0, output[-5000:]
    folder = sweep_dir(tmp_path, "quick")
    # the default storage: a journal file in the sweep folder, written by the jobs' trials
    assert (folder / "study.journal").is_file() and not (folder / "study.db").exists()
    study = load_study(folder, "quick")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    env = {n: json.loads((folder / f"trial_{n:04d}" / "env.json").read_text()) for n in range(3)}
    jobs = [e["SLURM_JOB_ID"] for e in env.values()]
    assert len(set(jobs)) == 3  # one SLURM job per trial
    assert {e["CUDA_VISIBLE_DEVICES"] for e in env.values()} <= {"0", "1"}
    records = {n: read_record(folder / f"trial_{n:04d}") for n in range(3)}
    spans = {n: (r.sweep.started_at, r.sweep.finished_at) for n, r in records.items()}
    assert spans[1][1] <= spans[2][0] < spans[0][1], spans  # asynchronous
    assert spans_overlap(list(spans.values())) == 2
    for a in range(3):  # trials that ran at the same time had different GPUs
        for b in range(a + 1, 3):
            if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]:
                assert env[a]["CUDA_VISIBLE_DEVICES"] != env[b]["CUDA_VISIBLE_DEVICES"]
    states = wait_until(
        lambda: (s := sacct_states(jobs)) and set(s.values()) == {"COMPLETED"} and s,
        60,
        "sacct to show the jobs COMPLETED",
    )
    assert sorted(states) == sorted(jobs)
    tres = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "AllocTRES", "-j", jobs[0]],
        capture_output=True,
        text=True,
    ).stdout
    assert "cpu=1" in tres and "mem=3G" in tres and "gres/gpu=1" in tres  # as overridden


def test_a_requeued_trial_resumes_from_its_own_last_checkpoint(tmp_path):
    """The trial's job is requeued (scontrol requeue) in its second epoch: SLURM runs the
    same job again, the trial resumes from its own last.ckpt and the sweep completes it."""
    proc = start_sweep(
        tmp_path,
        "+sweeps=quick",
        *SLURM_SMALL,
        "hydra.sweeper.n_trials=1",
        *TINIEST,
        "trainer.max_epochs=2",
        *RECORD_ENV,
        "+callbacks.hold._target_=tests.test_async_engines.HoldSecondEpoch",
        "+callbacks.hold.hold_s=300",
    )
    run_dir = sweep_dir(tmp_path, "quick") / "trial_0000"
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_until(lambda: last.is_file() and (run_dir / "env.json").is_file(), 240, "epoch 1", proc)
    job = json.loads((run_dir / "env.json").read_text())["SLURM_JOB_ID"]
    requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    # SLURM holds a requeued job back for a while (BeginTime): let it start again at once
    wait_until(lambda: _start_now(job), 60, "the requeued job to be pending", proc)
    output = finish(proc, tmp_path)
    assert proc.returncode == 0, output[-5000:]
    record = read_record(run_dir)
    assert record.status == "completed" and record.epochs == 2
    assert json.loads((run_dir / "env.json").read_text())["SLURM_RESTART_COUNT"] == "1"
    assert "resuming from it" in (run_dir / "train.log").read_text()
    study = load_study(sweep_dir(tmp_path, "quick"), "quick")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]


def test_a_killed_slurm_sweep_continues_and_cancels_its_orphan_job(tmp_path):
    """The sweep's main process killed (SIGKILL) while trial 1's job runs: the job runs on
    without it. The same command run again keeps trial 0, marks trial 1 interrupted,
    cancels its orphan job (its GPU is free again) and runs its values as trial 2."""
    one_at_a_time = ["sweep.n_jobs=1", "hydra.sweeper.n_trials=2"]  # trial 0 ends first
    args = ["+sweeps=quick", *SLURM_SMALL, *one_at_a_time, *TINIEST, *RECORD_ENV]
    first = start_sweep(tmp_path, *args, *hold_trial(1), log="first")
    folder = sweep_dir(tmp_path, "quick")
    env = folder / "trial_0001" / "env.json"
    wait_until(env.is_file, 240, "trial 1's job to train", first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    orphan = json.loads(env.read_text())["SLURM_JOB_ID"]
    assert sacct_states([orphan])[orphan] == "RUNNING"  # the job outlived its sweep

    again = start_sweep(tmp_path, *args, *hold_trial(1), log="again")
    output = finish(again, tmp_path, log="again")
    assert again.returncode == 0, output[-5000:]
    trials = load_study(folder, "quick").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["interrupted"] is True
    assert trials[1].user_attrs["sweep_job"] == f"slurm:{orphan}"
    assert trials[2].params == trials[1].params
    assert f"SLURM job {orphan}, left by the stopped sweep, is cancelled" in output
    assert sacct_states([orphan])[orphan].startswith("CANCELLED")


def _start_now(job: str) -> bool:
    """Once the requeued job pends (for its BeginTime), let it start now."""
    state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    if state.stdout.strip() != "PENDING":
        return False
    done = subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
    return done.returncode == 0


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["hydra.launcher.cpus_per_task=8", "hydra.launcher.mem_gb=32"], "More processors"),
        (["hydra.launcher.partition=nosuchpartition"], "Invalid partition name"),
    ],
    ids=["impossible-request", "no-such-partition"],
)
def test_a_request_slurm_refuses_fails_at_once_naming_it(tmp_path, overrides, reason):
    """The config's default job (8 CPUs, 32 GB) or an unknown partition: one short message
    naming the request and SLURM's reason, before any trial (nothing in the study)."""
    request = [*SLURM_SMALL, *overrides]
    proc = sweep(tmp_path, "+sweeps=quick", *request, *TINIEST, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "SLURM refuses the trials' job request" in output and reason in output
    assert overrides[0] in output  # the request, as the user can change it
    assert "Traceback" not in output
    assert not (sweep_dir(tmp_path, "quick") / "study.journal").exists()
