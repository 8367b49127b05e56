"""benchmarks/sweep_efficiency.py --tiny: two real seeded sweeps, the JSON line last."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, train_env


@pytest.mark.slow  # two sweeps of 3 trials each: about a minute on 2 cores
def test_sweep_efficiency_tiny_ends_with_its_json_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "sweep_efficiency.py",
            "--tiny",
            "--pruner",
            "threshold",
            "--pruner-arg",
            "lower=0.99",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT / "benchmarks",
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "sweep_efficiency" and result["pruner"] == "threshold"
    # the set-up is in the line: digits keep their own validation split in tiny mode
    assert result["lr"] == "1e-5,1e-1" and result["val_fraction"] is None
    assert result["pruner_args"] == ["lower=0.99"] and result["seed"] == 7
    for side in ("without", "with"):
        assert result[side]["trials"] == 3 and result[side]["epochs"] > 0
    assert result["without"]["pruned"] == 0
    # val/accuracy never reaches 0.99 here: every trial of the pruned sweep stops after
    # its first judged epoch (threshold's n_warmup_steps=1: the 2nd of 3 epochs)
    assert result["with"]["pruned"] == 3
    assert result["with"]["epochs"] == 6 and result["without"]["epochs"] == 9
    assert result["epochs_ratio"] == pytest.approx(
        result["with"]["epochs"] / result["without"]["epochs"], abs=1e-3
    )
    assert json.loads((tmp_path / "out" / "results.jsonl").read_text()) == result
    # the replay of the unpruned sweep with the same pruner predicts what the real pruned
    # sweep trained (exact for sequential trials)
    replay = subprocess.run(
        [
            sys.executable,
            "pruner_replay.py",
            str(tmp_path / "work" / "none" / "sweeps" / "efficiency"),
            "--pruner",
            "threshold",
            "--set",
            "threshold.lower=0.99",
        ],
        cwd=ROOT / "benchmarks",
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    (row,) = json.loads(replay.stdout.strip().splitlines()[-1])["pruners"]
    assert row["epochs"] == result["with"]["epochs"] and row["completed"] == 0
    assert row["epochs_ratio"] == result["epochs_ratio"]
