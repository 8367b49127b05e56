"""Sweep sampling and configuration, on real Optuna studies in SQLite (no training):
per-trial seeds, two processes started together, constant liar, enqueue, warm starts, and
every pruner option of hydra/sweeper/pruner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import optuna
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autotimm.sweep.pruners import BestSoFarPruner
from autotimm.sweep.sampling import (
    ATTR_ENQUEUED,
    build_sampler,
    enqueue,
    sampler_for_trial,
    trial_seed,
    warm_start,
)
from autotimm.sweep.storage import open_storage
from tests.conftest import ROOT

TPE = {"_target_": "optuna.samplers.TPESampler", "seed": 42, "constant_liar": None}
LR = optuna.distributions.LogUniformDistribution(1e-5, 1e-1)


def _study(tmp_path, name="s", direction="maximize"):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        direction=direction,
        load_if_exists=True,
    )


def test_trial_seeds_are_stable_and_distinct():
    assert trial_seed(42, "s", 3) == trial_seed(42, "s", 3)
    seeds = {trial_seed(42, "s", n) for n in range(200)}
    assert len(seeds) == 200
    assert trial_seed(42, "s", 0) != trial_seed(42, "other", 0)
    assert trial_seed(42, "s", 0) != trial_seed(43, "s", 0)


def test_constant_liar_is_on_with_parallel_trials():
    config = OmegaConf.create(TPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert build_sampler(config, n_jobs=2)._constant_liar is True
        assert build_sampler(config, n_jobs=1)._constant_liar is False
        forced = OmegaConf.create({**TPE, "constant_liar": False})
        assert build_sampler(forced, n_jobs=4)._constant_liar is False
    random = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 1})
    assert isinstance(build_sampler(random, n_jobs=4), optuna.samplers.RandomSampler)


DRAW = textwrap.dedent(
    """
    import json, sys, time
    import optuna
    from omegaconf import OmegaConf
    from autotimm.sweep.sampling import sampler_for_trial
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = float(sys.argv[3])
    config = OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 42})
    studies = {  # two studies, each with this process's seeded sampler
        kind: optuna.load_study(
            study_name="s", storage=storage, sampler=optuna.samplers.TPESampler(seed=42)
        )
        for kind, storage in (("per_trial", sys.argv[1]), ("one_seed", sys.argv[2]))
    }
    time.sleep(max(0.0, start - time.time()))  # both processes ask at the same moment
    drawn = {}
    for kind, study in studies.items():
        trial = study.ask()
        if kind == "per_trial":
            study.sampler = sampler_for_trial(config, 2, "s", trial.number)
        drawn[kind] = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    print(json.dumps(drawn))
    """
)


@pytest.fixture(scope="module")
def drawn_together(tmp_path_factory) -> list[dict[str, float]]:
    """Two processes started together, each asking two studies for a trial at the same
    moment: one with per-trial seeds (autotimm's), one with the seeded sampler alone."""
    import time

    storages = []
    for kind in ("per_trial", "one_seed"):
        folder = tmp_path_factory.mktemp(kind)
        _study(folder)  # created once, empty: both processes see 0 trials
        storages.append(f"sqlite:///{folder / 'study.db'}")
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRAW, *storages, str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_two_processes_started_together_draw_different_values(drawn_together):
    first, second = (drawn["per_trial"] for drawn in drawn_together)
    assert first != second


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_one_seed_for_the_sampler_alone_would_repeat_values(drawn_together):
    """Why per-trial seeds: two processes with one seeded sampler draw the same value."""
    first, second = (drawn["one_seed"] for drawn in drawn_together)
    assert first == second


def test_unseeded_sampler_keeps_the_studys_own():
    config = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": None})
    assert sampler_for_trial(config, 1, "s", 0) is None


def test_enqueued_configurations_run_first_once(tmp_path, caplog):
    study = _study(tmp_path)
    configurations = [{"optimizer": {"lr": 0.001}}, {"optimizer.lr": 0.01, "not.swept": 1}]
    assert enqueue(study, configurations, ["optimizer.lr"]) == 2
    assert "not.swept" in caplog.text  # left out, with a warning naming it
    assert enqueue(study, configurations, ["optimizer.lr"]) == 0  # a rerun repeats none
    assert len(study.user_attrs[ATTR_ENQUEUED]) == 2
    drawn = []
    for _ in range(2):
        trial = study.ask()
        drawn.append(trial.suggest_float("optimizer.lr", 1e-5, 1e-1, log=True))
        study.tell(trial, 0.5)
    assert drawn == [0.001, 0.01]


def _source_sweep(tmp_path):
    folder = tmp_path / "sweeps" / "small"
    folder.mkdir(parents=True)
    # a sweep folder's default storage: its journal file
    storage = open_storage(f"journal:{folder / 'study.journal'}")
    source = optuna.create_study(study_name="small", storage=storage, direction="maximize")
    for lr, value in [(1e-4, 0.5), (1e-3, 0.9), (1e-2, 0.7), (1e-1, 0.1)]:
        source.add_trial(
            optuna.trial.create_trial(
                params={"optimizer.lr": lr}, distributions={"optimizer.lr": LR}, value=value
            )
        )
    return folder


def test_warm_start_runs_the_other_studys_best_trials_first(tmp_path):
    folder = _source_sweep(tmp_path)
    study = _study(tmp_path, name="big")
    settings = {"warm_start_from": str(folder), "warm_start_top_k": 2, "enqueue": []}
    assert warm_start(study, settings, None, ["optimizer.lr"]) == 2
    drawn = []
    for _ in range(2):
        trial = study.ask()
        drawn.append(trial.suggest_float("optimizer.lr", 1e-5, 1e-1, log=True))
        study.tell(trial, 0.0)
    assert drawn == [1e-3, 1e-2]  # best first
    # by study name on the same storage
    storage = f"journal:{folder / 'study.journal'}"
    other = optuna.create_study(
        study_name="other", storage=open_storage(storage), direction="maximize"
    )
    assert (
        warm_start(
            other, {"warm_start_from": "small", "warm_start_top_k": 1}, storage, ["optimizer.lr"]
        )
        == 1
    )


def test_warm_start_from_a_bad_source_names_it(tmp_path):
    study = _study(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match=r"warm_start_from='nope'.*studies there: \['s'\]"):
        warm_start(study, {"warm_start_from": "nope"}, storage, ["optimizer.lr"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"has no study file \(study.journal or study.db\)"):
        warm_start(study, {"warm_start_from": str(empty)}, storage, ["optimizer.lr"])


PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "best_so_far": BestSoFarPruner,  # wraps successive halving
}


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_option_builds_its_optuna_pruner(compose, name):
    overrides = ["+sweeps=quick", f"hydra/sweeper/pruner={name}"]
    if name == "threshold":
        overrides.append("hydra.sweeper.pruner.lower=0.2")
    node = compose(overrides).hydra.sweeper.pruner
    first_line = (ROOT / "conf/hydra/sweeper/pruner" / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# Optuna pruner:")  # each file says what it does
    assert isinstance(instantiate(node), PRUNERS[name])


def _judged(pruner, curves: list[list[float]], direction: str = "maximize") -> list[int | None]:
    """Each curve reported epoch by epoch into one in-memory study, as trials report;
    per trial the epoch where the pruner stopped it (None: ran to its end)."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    stopped = []
    for curve in curves:
        trial, where = study.ask(), None
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
            if epoch < len(curve) - 1 and trial.should_prune():
                where = epoch
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if where is not None else (
            study.tell(trial, max(curve) if direction == "maximize" else min(curve))
        )
        stopped.append(where)
    return stopped


def test_best_so_far_keeps_a_trial_whose_curve_dips_for_an_epoch():
    # the last trial is the best (0.80) but dips at epoch 1, where successive halving
    # (min_resource 1) reads one value per rung and compares it with the others'
    steady = [[0.50, 0.60, 0.62, 0.64, 0.65], [0.45, 0.58, 0.60, 0.61, 0.62]]
    dipping = [0.66, 0.40, 0.75, 0.78, 0.80]

    def halving():
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)

    assert _judged(halving(), [*steady, dipping])[-1] == 1  # Optuna's own: pruned in the dip
    assert _judged(BestSoFarPruner(halving()), [*steady, dipping])[-1] is None
    # a trial that is worse at every epoch is still pruned through the wrapper
    assert _judged(BestSoFarPruner(halving()), [*steady, [0.2, 0.3, 0.3, 0.3, 0.3]])[-1] == 1
    # minimising (a loss): the running best is the running minimum
    losses = [[2.0, 1.0, 0.9, 0.8, 0.7], [0.9, 3.0, 0.8, 0.6, 0.5]]
    assert _judged(halving(), losses, "minimize")[-1] == 1
    assert _judged(BestSoFarPruner(halving()), losses, "minimize")[-1] is None


def test_best_so_far_leaves_the_stored_values_raw_and_ignores_nan():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for epoch, value in enumerate([0.5, float("nan"), 0.4, 0.7]):
        trial.report(value, epoch)
    frozen = study.get_trials(deepcopy=False)[0]
    from autotimm.sweep.pruners import best_so_far

    assert best_so_far(frozen, max).intermediate_values == {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.7}
    assert frozen.intermediate_values[2] == 0.4  # the study's own record is untouched


def test_best_so_far_lets_a_trial_that_diverges_now_be_pruned():
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    curves = [[0.5, 0.6, 0.6, 0.6], [0.7, float("nan"), 0.8, 0.8]]
    assert _judged(BestSoFarPruner(halving), curves)[-1] == 1  # NaN at the judged epoch


@pytest.mark.parametrize(
    "wrapped",
    [None, optuna.pruners.ThresholdPruner(lower=0.1), optuna.pruners.NopPruner()],
    ids=["none", "threshold", "nop"],
)
def test_best_so_far_refuses_pruners_that_do_not_compare_trials(wrapped):
    name = type(wrapped).__name__
    with pytest.raises(ValueError, match=rf"wrapped_pruner={name}: .*accepted: .*MedianPruner"):
        BestSoFarPruner(wrapped)


def test_best_so_far_wraps_another_pruner_from_the_command_line(compose):
    # the documented way: drop the wrapped node, then add a whole new one
    node = compose(
        [
            "+sweeps=quick",
            "hydra/sweeper/pruner=best_so_far",
            "~hydra.sweeper.pruner.wrapped_pruner",
            "+hydra.sweeper.pruner.wrapped_pruner={_target_: optuna.pruners.MedianPruner,"
            " n_startup_trials: 2, n_warmup_steps: 0}",
        ]
    ).hydra.sweeper.pruner
    pruner = instantiate(node)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)


def test_sweeps_choose_a_pruner(compose):
    for name in ("quick", "lr_mixup_ls"):
        node = compose([f"+sweeps={name}"]).hydra.sweeper.pruner
        assert node._target_ == "optuna.pruners.MedianPruner", name


@pytest.mark.slow  # a real two-objective sweep (3 short trials)
def test_multi_objective_sweep_writes_the_front_and_every_trials_cost(tmp_path):
    import yaml

    from autotimm.records.results import read_record
    from tests.test_sweeps import TINY, load_study, sweep, sweep_dir

    proc = sweep(
        tmp_path,
        "+sweeps=pareto",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.params={backbone: 'choice(resnet18, mobilenetv3_large_100)',"
        " optimizer.lr: 'tag(log, interval(1e-4, 3e-3))'}",
        "hydra/sweeper/pruner=median",  # left out: Optuna prunes one objective only
        *[o for o in TINY if not o.startswith("backbone")],
    )
    folder = sweep_dir(tmp_path, "pareto")
    study = load_study(folder, "pareto")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    log = proc.stdout + proc.stderr
    assert "sampling with NSGA-II" in log and "Pruning needs one objective" in log
    summary = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert summary["optimized_metric"] == ["val/accuracy", "model/latency_ms"]
    front = {t.number for t in study.best_trials}
    assert {s["trial"] for s in summary["solutions"]} == front
    for solution in summary["solutions"]:
        trial = study.trials[solution["trial"]]
        assert solution["values"] == pytest.approx(trial.values)
    for trial in study.trials:
        record = read_record(folder / f"trial_{trial.number:04d}")
        assert record.status == "completed"
        assert record.model.params_m > 0 and record.model.latency_ms > 0
        assert [o.name for o in record.objectives] == ["val/accuracy", "model/latency_ms"]
        assert [o.value for o in record.objectives] == pytest.approx(trial.values)
        assert record.objectives[1].value == record.model.latency_ms
