"""The samplers of `hydra/sweeper/sampler`: every option composes and builds its Optuna
sampler (as the sweeper builds it, seeds and constant liar included), a real GP sweep
finishes with the GP choosing its last trial, and an unknown name lists the options."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution

from autotimm.sweep.engine_checks import SweepSetupError
from autotimm.sweep.sampling import build_sampler, sampler_for_trial, trial_seed
from autotimm.utils import trusting_targets
from tests.conftest import ROOT, train_env
from tests.test_sweeps import TINIEST, load_study, sweep, sweep_dir

GROUP = "hydra/sweeper/sampler"
# every option of the group (the plugin's and conf/hydra/sweeper/sampler/*.yaml) and the
# sampler it builds; a new option fails test_the_group_offers_these_options until added
EXPECTED = {
    "tpe": optuna.samplers.TPESampler,
    "tpe_seeded": optuna.samplers.TPESampler,  # the sweeps' default
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "nsgaiii": optuna.samplers.NSGAIIISampler,
    "gp": optuna.samplers.GPSampler,
    "gp_seeded": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
}
REMOVED = {"motpe"}  # the plugin keeps the name to say what replaced it


def sampler_config(compose, name: str, *overrides: str):
    return compose(["+sweeps=quick", f"{GROUP}={name}", *overrides]).hydra.sweeper.sampler


def built(config, n_jobs: int = 2):
    with trusting_targets():  # as train.py's execution whitelist
        return build_sampler(config, n_jobs)


def test_the_group_offers_these_options():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options(GROUP)
    assert set(options) == set(EXPECTED) | REMOVED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_option_builds_its_sampler(compose, name):
    config = sampler_config(compose, name)
    sampler = built(config)
    if name == "grid":  # the sweeper gives it the search space's grid (autotimm.sweep.study)
        sampler = sampler({"optimizer.lr": [1e-3, 1e-2]})
    assert type(sampler) is EXPECTED[name]
    # constant liar is TPE's alone: on with parallel trials unless configured off
    liar = getattr(sampler, "_constant_liar", None)
    assert liar == {"tpe_seeded": True, "tpe": False}.get(name)
    if name.endswith("_seeded"):
        assert config.seed == 42  # ${seed}: the run's seed


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"grid"}))
def test_seeded_options_draw_each_trial_with_its_own_seed(compose, name):
    """What the sweeper puts in place for each trial (StudySweeper._seed_for): one trial,
    one draw, whichever process asks; the next trial draws another."""
    config = sampler_config(compose, name, "hydra.sweeper.sampler.seed=5")

    def first_draw(number: int) -> float | None:
        with trusting_targets():
            sampler = sampler_for_trial(config, 2, "study", number)
        if sampler is None:
            return None
        assert type(sampler) is EXPECTED[name]
        study = optuna.create_study(sampler=sampler)
        return study.ask(fixed_distributions={"x": FloatDistribution(0, 1)}).params["x"]

    if name == "qmc":
        # one seeded sequence for the study (the trial's index in it): no seed per trial
        assert first_draw(3) is None
        return
    assert first_draw(3) == first_draw(3) != first_draw(4)


def test_cmaes_without_its_package_is_one_line(compose, monkeypatch):
    config = sampler_config(compose, "cmaes")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "cmaes" else find_spec(name, *a),
    )
    with pytest.raises(SweepSetupError) as raised:
        built(config)
    message = str(raised.value)
    assert "\n" not in message and "pip install cmaes" in message


def test_cmaes_runs_its_model_here():
    """The cmaes package is installed: CMA-ES gets past its first (random) trial."""
    sampler = optuna.samplers.CmaEsSampler(seed=1, n_startup_trials=1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2 + t.suggest_float("y", 0, 1), 4
    )
    assert len(study.trials) == 4


def test_removed_motpe_says_what_replaced_it(compose):
    with pytest.raises(ValueError, match="hydra/sweeper/sampler=tpe"):
        built(sampler_config(compose, "motpe"))


def test_gp_sweep_of_three_trials(tmp_path):
    """A real `train.py -m ... hydra/sweeper/sampler=gp` sweep: after 2 random start-up
    trials the GP (not its random fallback) chooses the third."""
    proc = sweep(
        tmp_path,
        "+sweeps=quick",
        "sweep.name=gp",
        f"{GROUP}=gp",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/pruner=none",
        *TINIEST,
    )
    assert "sampler GPSampler" in proc.stdout + proc.stderr
    study = load_study(sweep_dir(tmp_path, "gp"), "gp")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3

    def random_draw(trial):  # what the GP's random sampler draws with this trial's seed
        seed = trial_seed(3, "gp", trial.number)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return study.ask(fixed_distributions=trial.distributions).params

    # start-up trials: the random sampler's values, seeded per trial ...
    assert [random_draw(t) for t in trials[:2]] == [t.params for t in trials[:2]]
    # ... the third: the GP's choice
    assert random_draw(trials[2]) != trials[2].params


def test_unknown_sampler_lists_the_options(tmp_path):
    proc = sweep(tmp_path, "+sweeps=quick", f"{GROUP}=gpx", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Could not find '{GROUP}/gpx'" in output
    assert f"Available options in '{GROUP}'" in output
    listed = {line.strip() for line in output.splitlines() if line.startswith("\t")}
    assert set(EXPECTED) <= listed, output


@pytest.mark.slow  # two sweeps of 3 trials each: about 45 s on 2 cores
def test_sweep_efficiency_compares_samplers_tiny(tmp_path):
    """benchmarks/sweep_efficiency.py with several --sampler: the best after each --at,
    per sampler and seed, and the median over seeds; the JSON line last."""
    proc = subprocess.run(
        [
            sys.executable,
            "sweep_efficiency.py",
            "--tiny",
            "--sampler",
            "gp",
            "--sampler",
            "random",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT / "benchmarks",
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["compare"] == "samplers" and result["pruner"] == "none"
    assert result["samplers"] == ["gp", "random"] and result["seeds"] == [7]
    assert result["sampler_options"] == ["gp_seeded", "random"] and result["at"] == [1, 2, 3]
    for sampler in ("gp", "random"):
        best = result["best_after"][sampler]["7"]
        values = [best[n] for n in ("1", "2", "3")]
        assert all(v is not None for v in values) and values == sorted(values)  # max
        assert result["median"][sampler] == best  # one seed
    # 3 trials are all start-up trials: both samplers draw the same seeded values
    assert result["best_after"]["gp"] == result["best_after"]["random"]
    assert result["mean_later"]["gp"] == result["mean_later"]["random"]  # trials 2-3
    assert json.loads((tmp_path / "out" / "results.jsonl").read_text()) == result
