"""Pruning: real sweeps on real data (sklearn digits) with real Optuna studies on SQLite.

A threshold pruner stops trials of a hopeless learning rate (1e-8: nothing is learnt)
after their second epoch; the good learning rate trains to the end. Trials run in loky
worker processes (2 simulated GPUs), so every report reaches the trial's Optuna trial
through the storage, as it would from a SLURM job or another machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotimm.records.results import read_record
from tests.test_sweeps import _wandb_inspect, load_study, sweep, sweep_dir

GOOD, HOPELESS = 0.003, (1e-8, 2e-8)
MAX_EPOCHS = 6  # the good trial runs all 6; hopeless ones stop after 2
# a trial: digits at 32 px, a tiny timm model, 256 images per split
PRUNING_SWEEP = [
    "+sweeps=quick",
    "sweep.name=prune",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.params={optimizer.lr: 'choice(0.003, 1e-8, 2e-8)'}",
    # the good lr first (it runs alone to the end), then the two hopeless ones
    "sweep.enqueue=[{optimizer: {lr: 0.003}}, {optimizer: {lr: 1e-8}}, {optimizer: {lr: 2e-8}}]",
    "hydra/sweeper/pruner=threshold",
    "hydra.sweeper.pruner.lower=0.2",  # val/accuracy; 10 classes: 0.1 is chance
    "hydra.sweeper.pruner.n_warmup_steps=1",  # judged from the 2nd epoch on
    "regularization=none",
    "data=digits",
    "data.limit=256",
    "data.batch_size=32",
    "data.image_size=32",
    "backbone.model_name=test_efficientnet",
    "metrics=minimal",
    "logger=default",  # CSV + W&B (offline)
    "callbacks=quiet",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "test=false",
]


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory) -> tuple[Path, object]:
    tmp_path = tmp_path_factory.mktemp("pruning")
    sweep(tmp_path, *PRUNING_SWEEP, env={"AUTOTIMM_SIMULATE_GPUS": "2"})
    folder = sweep_dir(tmp_path, "prune")
    return folder, load_study(folder, "prune")


def _trials(study) -> dict[str, list]:
    by_state: dict[str, list] = {}
    for trial in study.get_trials():
        by_state.setdefault(trial.state.name, []).append(trial)
    return by_state


def test_hopeless_trials_are_pruned_with_their_intermediate_values(pruned_sweep):
    folder, study = pruned_sweep
    states = _trials(study)
    assert [t.params["optimizer.lr"] for t in states["COMPLETE"]] == [GOOD]
    assert len(states["PRUNED"]) == 2 and "FAIL" not in states
    for trial in states["PRUNED"]:
        assert trial.params["optimizer.lr"] in HOPELESS
        # reported by the trial process itself: one value per validation epoch
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.intermediate_values[1] < 0.2
    (good,) = states["COMPLETE"]
    assert sorted(good.intermediate_values) == list(range(MAX_EPOCHS))
    assert study.trials[0].params["optimizer.lr"] == GOOD  # enqueued: ran first
    summary = (folder / "optimization_results.yaml").read_text()
    assert "pruned: 2" in summary and "failed: 0" in summary


def test_pruned_trials_record_where_they_stopped_and_keep_checkpoints(pruned_sweep):
    folder, study = pruned_sweep
    for trial in _trials(study)["PRUNED"]:
        run_dir = folder / f"trial_{trial.number:04d}"
        record = read_record(run_dir)
        assert record.status == "pruned" and record.failure is None
        assert record.pruned.epoch == 1
        assert record.pruned.value == pytest.approx(trial.intermediate_values[1])
        assert record.epochs == 2 < MAX_EPOCHS  # trained 2 of 6 epochs
        assert record.test == {}  # a pruned trial is not tested
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert record.sweep.trial == trial.number


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_pruned_trial_frees_its_gpu_for_the_next_trial(pruned_sweep):
    """2 (simulated) GPUs: the third trial starts when a pruned one stops, not when the
    long one ends."""
    folder, study = pruned_sweep
    records = {t.number: read_record(folder / f"trial_{t.number:04d}") for t in study.trials}
    long_run = records[0]
    first_pruned, successor = records[1], records[2]
    assert successor.sweep.started_at >= first_pruned.sweep.finished_at - 1.0
    assert successor.sweep.started_at < long_run.sweep.finished_at
    assert successor.gpu == first_pruned.gpu != long_run.gpu


def test_pruned_wandb_run_is_tagged_and_finished(pruned_sweep):
    folder, study = pruned_sweep
    pruned = _trials(study)["PRUNED"][0]
    (path,) = (folder / f"trial_{pruned.number:04d}" / "wandb").glob("offline-run-*/run-*.wandb")
    run = json.loads(_wandb_inspect(path, "--summary", "--json"))
    assert "pruned" in run["tags"]
    assert run["summary"]["status"] == "pruned" and run["summary"]["pruned_epoch"] == 1
    assert run["exit_code"] == 0  # finished cleanly, not failed


@pytest.mark.slow  # a real separate process per trial: submitit's local executor
def test_trials_in_submitit_jobs_report_through_the_storage(tmp_path):
    """The trial process shares nothing with the sweeper: it finds its trial in SQLite."""
    sweep(
        tmp_path,
        *PRUNING_SWEEP,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "logger=csv",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.params={optimizer.lr: 'choice(0.003, 1e-8)'}",
        "sweep.enqueue=[{optimizer: {lr: 0.003}}, {optimizer: {lr: 1e-8}}]",
    )
    folder = sweep_dir(tmp_path, "prune")
    states = _trials(load_study(folder, "prune"))
    (pruned,) = states["PRUNED"]
    assert pruned.params["optimizer.lr"] == 1e-8 and sorted(pruned.intermediate_values) == [0, 1]
    record = read_record(folder / f"trial_{pruned.number:04d}")
    assert record.status == "pruned" and record.epochs == 2
    assert [t.params["optimizer.lr"] for t in states["COMPLETE"]] == [GOOD]


BRACKETS = """
import json, sys
import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf

node = OmegaConf.load(sys.argv[1])
node.max_resource = 27  # four brackets
ours = instantiate(node)
study = optuna.create_study(study_name="efficiency")
trials = [optuna.trial.create_trial(value=0.0, intermediate_values={0: 0.0}) for _ in range(64)]
for number, trial in enumerate(trials):
    trial.number = number
out = {}
for name, pruner in (("ours", ours),):
    pruner._try_initialization(study)  # the brackets, as on its first prune()
    out[name] = [pruner._get_bracket_id(study, trial) for trial in trials]
print(json.dumps(out))
"""


def _brackets(hash_seed: int) -> dict[str, list[int]]:
    """Every trial's Hyperband bracket as a process with this PYTHONHASHSEED computes it."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    preset = ROOT / "conf/hydra/sweeper/pruner/hyperband.yaml"
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run(
        [sys.executable, "-c", BRACKETS, str(preset)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _brackets_here() -> dict[str, list[int]]:
    """The same, computed in this process (with its own hash salt)."""
    import contextlib
    import io
    import sys
    import warnings
    from unittest import mock

    from tests.conftest import ROOT

    preset = ROOT / "conf/hydra/sweeper/pruner/hyperband.yaml"
    printed = io.StringIO()
    with mock.patch.object(sys, "argv", ["-c", str(preset)]), contextlib.redirect_stdout(printed):
        with warnings.catch_warnings():  # Optuna's "create_trial is experimental"
            warnings.simplefilter("ignore")
            exec(BRACKETS, {"__name__": "brackets"})
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def test_hyperband_brackets_agree_across_processes():
    # two trial processes (different hash salts, as two SLURM jobs or pool workers have):
    # this one and a new one with a fixed PYTHONHASHSEED that is not this one's
    import os

    first = _brackets_here()
    second = _brackets(2 if os.environ.get("PYTHONHASHSEED") == "1" else 1)
    assert len(set(first["ours"])) == 4  # every bracket is used
    # the same split of the study into brackets in every trial process (Optuna 2.10 salted
    # it per process; Optuna >= 3 keys it by a CRC-32)
    assert first["ours"] == second["ours"]
