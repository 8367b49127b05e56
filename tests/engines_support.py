"""Shared pieces of the `engines` tests (tests/test_engines_*.py), run by `make test-engines`.

scripts/engines/run.sh starts a one-node SLURM cluster (2 CPUs, 2 fake GPUs as GRES) and a
PostgreSQL server, and sets AUTOTIMM_ENGINES=1, SLURM_CONF and AUTOTIMM_TEST_POSTGRES
(the server's URL). Run elsewhere (e.g. `pytest -m "slow or not slow"`), the engine tests
skip with that reason; under `make test-engines` a missing engine fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.callbacks import Callback

from tests.conftest import ROOT, TRAIN, train_env

UNDER_MAKE = os.environ.get("AUTOTIMM_ENGINES") == "1"
# a SLURM job sized to the test node (2 CPUs, ~16 GB; a trial takes ~1.4 GB RSS)
SLURM_SMALL = [
    "hydra/launcher=slurm_gpu",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=3",
]
RECORD_ENV = [
    "+callbacks.record_env._target_=tests.engines_support.RecordEnv",
    "measure_cost=false",
]


def need(what: str, ok: bool) -> None:
    """Skip outside `make test-engines`; fail inside it when an engine is missing."""
    if ok:
        return
    message = f"{what}: run `make test-engines`, which starts it"
    if UNDER_MAKE:
        pytest.fail(message)
    pytest.skip(message)


def need_slurm() -> None:
    need("a SLURM cluster", bool(os.environ.get("SLURM_CONF")) and bool(shutil.which("sbatch")))


def postgres_url() -> str:
    url = os.environ.get("AUTOTIMM_TEST_POSTGRES", "")
    need("a PostgreSQL server", bool(url))
    return url


def unique(name: str) -> str:
    """A study name of its own (the engines' state lives as long as one `make` run)."""
    return f"{name}_{uuid.uuid4().hex[:8]}"


def start_sweep(tmp_path: Path, *overrides: str, log: str = "sweep") -> subprocess.Popen:
    """`python train.py -m <overrides>` from tmp_path in its own process group."""
    env = train_env(tmp_path)
    env["PYTHONPATH"] = str(ROOT)  # trials import tests.engines_support's callbacks
    return subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / f"{log}.out").open("w"),
        stderr=subprocess.STDOUT,
        # its own process group (killpg), in the session make test-engines cleans up
        preexec_fn=_own_group,
    )


def _own_group() -> None:
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C as in a terminal


def finish(proc: subprocess.Popen, tmp_path: Path, log: str = "sweep", timeout: int = 420) -> str:
    """Wait for a sweep; its output (killed with its process group if it overruns)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return (tmp_path / f"{log}.out").read_text()


def wait_until(condition: Any, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def load_study(name: str, storage: str):
    import optuna

    from autotimm.sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's accounting state of each job (allocation lines only)."""
    done = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split("|")[:2] for line in done.stdout.split() if "|" in line)


class RecordEnv(Callback):
    """Writes what the engine gave the trial's process (its GPU, its job) to env.json in
    the trial's run directory: results.json records a GPU only where CUDA runs."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        out = Path(HydraConfig.get().runtime.output_dir)
        names = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_RESTART_COUNT")
        seen = {name: os.environ.get(name) for name in names}
        (out / "env.json").write_text(json.dumps({**seen, "pid": os.getpid()}))


class HoldTrial(Callback):
    """Trial number `trial` holds at its start for `hold_s` (the test kills its sweep there);
    other trials, and the same values run again under another number, go on."""

    def __init__(self, trial: int, hold_s: float) -> None:
        self.trial, self.hold_s = trial, hold_s

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        if Path(HydraConfig.get().runtime.output_dir).name == f"trial_{self.trial:04d}":
            deadline = time.time() + self.hold_s
            while time.time() < deadline:
                time.sleep(0.2)


def hold_trial(number: int) -> list[str]:
    return [
        "+callbacks.hold._target_=tests.engines_support.HoldTrial",
        f"+callbacks.hold.trial={number}",
        "+callbacks.hold.hold_s=600",
    ]
