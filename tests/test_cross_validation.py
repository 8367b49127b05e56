"""Cross-validated trials (`sweep.cross_validate=true`): each trial trains its folds one
after another in its own job, reports each fold's objective to its Optuna trial (the fold
as the step), and WilcoxonPruner stops a trial that is worse than the best on the folds
both ran; completed trials return the mean over their folds.

One real sweep on real data (sklearn digits, a tiny timm model, 3 folds of 2 epochs) in a
pool worker process (1 simulated GPU): two good learning rates, then a hopeless one
(1e-8: nothing is learnt) that is pruned after 2 of its 3 folds. The refusals are checked
in this process.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from autotimm.records.results import read_record, record_path
from tests.conftest import FAST
from tests.test_sweeps import load_study, sweep, sweep_dir

FOLDS, EPOCHS = 3, 2
# the better one second: a trial worse than the best on both folds it ran would be pruned too
MEDIUM, GOOD, HOPELESS = 0.003, 0.01, 1e-8
CV_SWEEP = [
    "+sweeps=quick",
    "sweep.name=cv",
    "hydra.sweeper.n_trials=3",
    f"hydra.sweeper.params={{optimizer.lr: 'choice({MEDIUM}, {GOOD}, {HOPELESS})'}}",
    f"sweep.enqueue=[{{optimizer: {{lr: {MEDIUM}}}}}, {{optimizer: {{lr: {GOOD}}}}}, "
    f"{{optimizer: {{lr: {HOPELESS}}}}}]",
    f"data.folds={FOLDS}",
    "sweep.cross_validate=true",
    "hydra/sweeper/pruner=wilcoxon",
    # 3 folds: the last is never judged, and after 2 folds Wilcoxon's p is at least 0.25
    "hydra.sweeper.pruner.p_threshold=0.3",
    "regularization=none",  # and nothing else swept: quick's mixup and smoothing fixed at 0
    "regularization.mixup_alpha=0",
    "regularization.label_smoothing=0",
    "data=digits",
    "data.limit=240",  # the pool: 3 folds of 80 images
    "data.batch_size=16",
    "data.image_size=32",
    "backbone.model_name=test_efficientnet",
    "metrics=minimal",
    "logger=csv",
    "callbacks=quiet",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    f"trainer.max_epochs={EPOCHS}",  # 2 epochs: a reported epoch would show as a step
    "test=false",
    "measure_cost=false",
]


@pytest.fixture(scope="module")
def cv_sweep(tmp_path_factory) -> tuple[Path, object]:
    tmp_path = tmp_path_factory.mktemp("cross_validation")
    sweep(tmp_path, *CV_SWEEP, env={"AUTOTIMM_SIMULATE_GPUS": "1"})
    folder = sweep_dir(tmp_path, "cv")
    return folder, load_study(folder, "cv")


def _trial_dir(folder: Path, number: int) -> Path:
    return folder / f"trial_{number:04d}"


def _fold_values(trial_dir: Path) -> dict[int, float]:
    """Each fold's objective, read from the fold's own results.json."""
    found = {}
    for fold_dir in sorted(trial_dir.glob("fold_*")):
        record = read_record(fold_dir)
        assert record.status == "completed" and record.folds == FOLDS
        assert fold_dir.name == f"fold_{record.fold}"
        found[record.fold] = record.objective.value
    return found


def test_hopeless_trial_is_pruned_by_wilcoxon_before_its_last_fold(cv_sweep):
    folder, study = cv_sweep
    states = {t.params["optimizer.lr"]: t for t in study.get_trials()}
    assert [t.params["optimizer.lr"] for t in study.trials] == [MEDIUM, GOOD, HOPELESS]
    pruned = states[HOPELESS]
    assert pruned.state.name == "PRUNED"
    trial_dir = _trial_dir(folder, pruned.number)
    values = _fold_values(trial_dir)
    assert sorted(values) == [0, 1]  # the last fold never ran
    assert not (trial_dir / "fold_2").exists()
    assert pruned.intermediate_values == pytest.approx(values)  # steps are folds
    record = read_record(trial_dir)
    assert record.status == "pruned" and record.folds == FOLDS and record.fold is None
    assert record.pruned.fold == 1 and record.fold_values == pytest.approx([values[0], values[1]])
    assert record.pruned.value == pytest.approx(statistics.fmean(values.values()))
    summary = (folder / "optimization_results.yaml").read_text()
    assert "pruned: 1" in summary and "failed: 0" in summary


def test_completed_trials_return_the_mean_of_their_folds(cv_sweep):
    folder, study = cv_sweep
    completed = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(t.params["optimizer.lr"] for t in completed) == [MEDIUM, GOOD]
    for trial in completed:
        trial_dir = _trial_dir(folder, trial.number)
        values = _fold_values(trial_dir)
        assert sorted(values) == list(range(FOLDS))
        assert trial.value == pytest.approx(statistics.fmean(values.values()))
        # one report per fold and none per epoch (2 epochs would have taken steps 0 and 1)
        assert trial.intermediate_values == pytest.approx(values)
        record = read_record(trial_dir)
        assert record.status == "completed" and record.objective.value == pytest.approx(trial.value)
        assert record.fold_values == pytest.approx([values[f] for f in range(FOLDS)])
        assert record.val["val/accuracy"] == pytest.approx(trial.value)  # mean of the folds
        assert record.sweep.trial == trial.number


def test_each_fold_is_a_run_of_its_own(cv_sweep):
    folder, study = cv_sweep
    trial = study.trials[0]
    fold_dir = _trial_dir(folder, trial.number) / "fold_1"
    record = read_record(fold_dir)
    assert record.run_dir == str(fold_dir) and "data.fold=1" in record.overrides
    assert record.epochs == EPOCHS and record.best_model_path.startswith(str(fold_dir))
    assert (fold_dir / "checkpoints" / "last.ckpt").is_file()
    assert (fold_dir / "metrics.csv").is_file()  # the fold's own logger
    config = yaml.safe_load((fold_dir / ".hydra" / "config.yaml").read_text())
    assert config["data"]["fold"] == 1 and config["data"]["folds"] == FOLDS
    assert config["sweep"]["cross_validate"] is False  # re-running it trains this fold


def test_compare_reads_a_cross_validated_sweep(cv_sweep):
    folder, study = cv_sweep
    from autotimm.compare import compare

    report = compare(folder, make_plot=False, show=False)
    folds = report["folds"]
    best = study.best_trial
    assert folds[0]["rank"] == 1 and folds[0]["optimizer.lr"] == pytest.approx(GOOD)
    assert folds[0]["objective_mean"] == pytest.approx(best.value)
    assert [(r["folds"], r["data.folds"]) for r in folds] == [(3, 3), (3, 3), (2, 3)]
    best_config = yaml.safe_load(report["files"]["best_config"].read_text())
    assert best_config["optimizer"]["lr"] == pytest.approx(GOOD)
    assert best_config["data"]["folds"] is None and best_config["data"]["fold"] is None


# -- in this process ---------------------------------------------------------------------


def test_pruning_callback_is_off_in_cross_validated_trials():
    from autotimm.sweep.pruning import pruning_callback

    cfg = OmegaConf.create({"sweep": {"trial": 3, "cross_validate": True}})
    assert pruning_callback(cfg) is None  # folds are the steps, epochs are not reported


def _checked(cfg: dict, pruner: str | None = None, **hydra) -> None:
    from autotimm.sweep.cross_validation import check_cross_validation

    node = {"sweeper": {"pruner": {"_target_": pruner}} if pruner else {}, **hydra}
    base = {"data": {"folds": None, "fold": None}, "optimized_metric": "val/accuracy"}
    config = OmegaConf.merge(base, cfg)
    check_cross_validation(config, OmegaConf.create(node))


WILCOXON = "optuna.pruners.WilcoxonPruner"
CV = {"sweep": {"cross_validate": True}}


@pytest.mark.parametrize(
    ("cfg", "pruner", "message"),
    [
        (CV, None, r"^data.folds=None: sweep.cross_validate=true .*accepted: an integer >= 2"),
        ({**CV, "data": {"folds": 1}}, None, r"^data.folds=1: .*accepted: an integer >= 2"),
        (
            {**CV, "data": {"folds": 3, "fold": 0}},
            None,
            r"^data.fold=0: sweep.cross_validate=true runs folds 0..2 itself; accepted: null",
        ),
        (
            {
                **CV,
                "data": {"folds": 3},
                "optimized_metric": ["val/accuracy", "model/latency_ms"],
                "optimized_mode": ["max", "min"],
            },
            WILCOXON,
            r"^optimized_metric=\['val/accuracy', 'model/latency_ms'\]: .*accepted: one metric",
        ),
        (
            {**CV, "data": {"folds": 3}, "ckpt_path": "last.ckpt"},
            None,
            r"^ckpt_path='last.ckpt': .*accepted: null",
        ),
        (
            {"data": {"folds": 3}},
            WILCOXON,
            r"^hydra/sweeper/pruner=wilcoxon .* needs sweep.cross_validate=true.*accepted:",
        ),
        (
            {"sweep": {"cross_validate": "yes"}},
            None,
            r"^sweep.cross_validate='yes': .*true or false",
        ),
    ],
)
def test_bad_combinations_are_refused_naming_the_value(cfg, pruner, message):
    with pytest.raises(ValueError, match=message):
        _checked(cfg, pruner)


def test_accepted_combinations_pass():
    _checked({**CV, "data": {"folds": 5}}, WILCOXON)
    _checked({**CV, "data": {"folds": 2}}, "optuna.pruners.MedianPruner")  # steps are folds
    _checked({"data": {"folds": 5, "fold": 2}}, "optuna.pruners.MedianPruner")  # the kfold grid
    _checked({})


def test_a_kfold_grid_with_cross_validate_is_refused_before_any_trial(capsys):
    """The sweep's own check (MultirunChecks): one line, exit 1, nothing run."""
    from autotimm.sweep.multirun_checks import MultirunChecks

    config = OmegaConf.create(
        {
            **CV,
            "trainer": {"devices": 1},
            "optimized_metric": "val/accuracy",
            "data": {"folds": 5, "fold": None},
            "hydra": {"sweeper": {"params": {"data.fold": "range(0,5)"}}},
        }
    )
    with pytest.raises(SystemExit) as exited:
        MultirunChecks().on_multirun_start(config)
    assert exited.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Error: data.fold='range(0,5)': sweep.cross_validate=true runs folds 0..4" in err


def test_a_p_threshold_that_cannot_prune_is_warned_about(caplog):
    pruner = {"sweeper": {"pruner": {"_target_": WILCOXON, "p_threshold": 0.1}}}
    with caplog.at_level(logging.WARNING, logger="autotimm.sweep.cross_validation"):
        _checked({**CV, "data": {"folds": 4}}, **pruner)  # after 3 folds: p >= 0.125
        assert "no trial can be pruned" in caplog.text
        caplog.clear()
        _checked({**CV, "data": {"folds": 5}}, **pruner)  # after 4 folds: p >= 0.0625
        assert caplog.text == ""


def test_a_single_run_is_refused_with_one_line(run_app):
    done = run_app("sweep.cross_validate=true", "data.folds=1")
    assert done.code == 1
    assert "data.folds=1: sweep.cross_validate=true runs every fold" in done.output
    assert done.results()["status"] == "failed"  # recorded like any refused run


TINY_RUN = [
    *FAST,
    "data.limit=60",  # 2 folds of 30 digits
    "data.batch_size=15",
    "data.image_size=16",
    "backbone.model_name=test_resnet",
    "metrics=minimal",
    "trainer.max_epochs=1",
    "test=false",
    "measure_cost=false",
]


def test_a_single_run_trains_every_fold_and_a_requeued_one_keeps_finished_folds(run_app):
    cross_validated = ("sweep.cross_validate=true", "data.folds=2", *TINY_RUN)
    done = run_app(*cross_validated, name="cv")
    assert done.code == 0, done.output
    folds = [read_record(done.run_dir / f"fold_{f}") for f in range(2)]
    assert [(r.fold, r.folds, r.status) for r in folds] == [
        (0, 2, "completed"),
        (1, 2, "completed"),
    ]
    record = read_record(done.run_dir)
    values = [r.objective.value for r in folds]
    assert record.fold_values == pytest.approx(values) and record.sweep is None
    assert record.objective.value == pytest.approx(statistics.fmean(values))
    # as if killed while fold 1 wrote its record: fold 0 is kept, fold 1 resumes from its
    # last.ckpt (already at max_epochs: validated again, nothing trained)
    kept = record_path(done.run_dir / "fold_0").stat().st_mtime_ns
    record_path(done.run_dir / "fold_1").unlink()
    again = run_app(*cross_validated, name="cv")
    assert again.code == 0, again.output
    assert record_path(done.run_dir / "fold_0").stat().st_mtime_ns == kept
    resumed = read_record(done.run_dir / "fold_1")
    assert resumed.status == "completed" and resumed.objective.value == pytest.approx(values[1])
    assert read_record(done.run_dir).objective.value == pytest.approx(record.objective.value)
