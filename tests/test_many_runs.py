"""Many runs at once: 8 real `python train.py` processes started in the same second each
write their own run directory with an intact record (run names carry microseconds and the
process id: conf/hydra/default.yaml)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from autotimm.records.results import read_record
from tests.conftest import FAST, TRAIN, run_dirs, train_env

RUNS = 8
# one epoch of two batches on real digits (a tenth of them), timm's smallest resnet
TINY_RUN = [
    *FAST,
    "data.limit=200",
    "data.batch_size=16",
    "backbone.model_name=test_resnet",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "measure_cost=false",
]


@pytest.mark.slow  # 8 interpreters at once: about a minute on 2 cores
def test_eight_runs_started_in_the_same_second_keep_their_own_directories(tmp_path):
    env = train_env(tmp_path)
    started = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, str(TRAIN), *TINY_RUN, f"seed={seed}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in range(RUNS)
    ]
    assert time.time() - started < 1.0, "the runs did not start within one second"
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == RUNS, [str(d) for d in dirs]
    seeds = set()
    for run_dir in dirs:
        record = read_record(run_dir)  # parses: nothing half-written or interleaved
        assert record is not None and record.status == "completed"
        assert record.run_dir == str(run_dir)
        assert record.objective.value is not None
        (seed,) = [o for o in record.overrides if o.startswith("seed=")]
        seeds.add(seed)
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert record.best_model_path and record.best_model_path.startswith(str(run_dir))
        assert (run_dir / "metrics.csv").is_file() and (run_dir / ".hydra").is_dir()
    assert seeds == {f"seed={s}" for s in range(RUNS)}  # each record is its own run's
