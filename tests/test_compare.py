"""`python -m autotimm.compare`: ranked table, compare.csv, compare.png, best_config.yaml.

Built on hand-made run folders (a run record, metrics.csv, .hydra/) so it needs no
training; test_sweeps.py compares a real sweep's folder too.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotimm.compare import compare, find_runs, main, swept_keys
from autotimm.records.results import (
    RESULTS_FILE,
    Objective,
    Pruned,
    RunRecord,
    SweepInfo,
    read_record,
    record_path,
    write_record,
)
from autotimm.sweep.storage import open_storage
from tests.conftest import TRAIN, train_env

TRIALS = [  # trial, lr, mixup, objective (None: failed), status
    (0, 1e-3, 0.2, 0.81, "completed"),
    (1, 3e-2, 0.0, 0.93, "completed"),
    (2, 1e-4, 0.4, 0.52, "completed"),
    (3, 5.0, 0.1, None, "failed"),
]


def make_run(folder: Path, trial, lr, mixup, objective, status, sweep=True) -> Path:
    run = folder / f"trial_{trial:04d}"
    (run / ".hydra").mkdir(parents=True)
    overrides = [
        f"optimizer.lr={lr}",
        f"regularization.mixup_alpha={mixup}",
        "+sweeps=quick",
        "data=synthetic",
        f"sweep.trial={trial}",
        f"paths.output_dir=/somewhere/{trial}",
    ]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {
        "seed": 42,
        "optimized_metric": "val/accuracy",
        "ckpt_path": None,
        "optimizer": {"name": "adamw", "lr": lr},
        "regularization": {"mixup_alpha": mixup},
        "sweep": {"name": "quick", "job_type": "sweep", "trial": trial, "params": {}, "tags": []},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    record = RunRecord(
        status=status,
        objective=Objective("val/accuracy", objective, "max"),
        run_dir=str(run),
        overrides=overrides,
        wall_time_s=12.5,
        device="cpu",
        gpu=str(trial % 2),
    )
    if sweep:
        params = {"optimizer.lr": lr, "regularization.mixup_alpha": mixup}
        record.sweep = SweepInfo(name="quick", trial=trial, params=params)
    if status == "completed":
        record.val = {"val/accuracy": objective, "val/loss": 1 - objective}
        record.test = {"test/accuracy": objective - 0.01, "test/loss": 1.1 - objective}
        record.epochs, record.best_epoch = 3, 2
        write_metrics(run, [objective * (epoch + 1) / 3 for epoch in range(3)])
    else:
        record.failure = "NonFiniteLossError: the training loss became NaN or infinite"
    write_record(run, record)
    return run


def write_metrics(run: Path, accuracies: list[float]) -> None:
    """A Lightning-style metrics.csv: a train row and a val row per epoch."""
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss", "val/accuracy", "val/loss"])
        for epoch, value in enumerate(accuracies):
            writer.writerow([epoch, epoch * 10 + 9, 1.0, "", ""])
            writer.writerow([epoch, epoch * 10 + 9, "", value, 1 - value])


@pytest.fixture
def sweep_folder(tmp_path) -> Path:
    folder = tmp_path / "sweeps" / "quick"
    for trial in TRIALS:
        make_run(folder, *trial)
    killed = folder / "trial_0004" / ".hydra"  # killed before it wrote its record
    killed.mkdir(parents=True)
    (killed / "overrides.yaml").write_text(
        yaml.safe_dump(["optimizer.lr=0.002", "regularization.mixup_alpha=0.3", "sweep.trial=4"])
    )
    (folder / "optimization_results.yaml").write_text("name: optuna\n")
    return folder


def test_table_csv_png_and_best_config(sweep_folder, capsys):
    report = compare(sweep_folder)
    out = capsys.readouterr().out
    rows = report["rows"]
    assert [r["trial"] for r in rows][:3] == ["1", "0", "2"]  # ranked by val/accuracy
    assert [r["rank"] for r in rows] == [1, 2, 3, None, None]
    assert {r["status"] for r in rows[3:]} == {"failed", "incomplete"}
    assert rows[0]["optimizer.lr"] == pytest.approx(3e-2)
    assert rows[0]["test/accuracy"] == pytest.approx(0.92)
    for text in ("lr", "mixup_alpha", "val/accuracy", "test/accuracy", "failed", "incomplete"):
        assert text in out
    assert "NonFiniteLossError" in out

    with (sweep_folder / "compare.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 5 and table[0]["trial"] == "1"
    assert {"objective", "optimizer.lr", "regularization.mixup_alpha", "val/loss", "gpu"} <= set(
        table[0]
    )
    assert "sweep.trial" not in table[0] and "paths.output_dir" not in table[0]

    png = sweep_folder / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width >= 800 and height >= 300

    best = yaml.safe_load((sweep_folder / "best_config.yaml").read_text())
    assert best["optimizer"]["lr"] == pytest.approx(3e-2)
    assert best["defaults"] == [{"hydra": "default"}, "_self_"]
    assert best["sweep"]["name"] is None and best["sweep"]["job_type"] == "train"
    header = (sweep_folder / "best_config.yaml").read_text().splitlines()[2]
    assert "--config-name best_config" in header


def test_folder_of_single_runs_uses_the_overrides_that_differ(tmp_path):
    folder = tmp_path / "runs"
    for trial, lr, _mixup, objective, status in TRIALS[:3]:
        make_run(folder / "2026-11-26", trial, lr, 0.0, objective, status, sweep=False)
    runs = find_runs(folder)
    assert len(runs) == 3
    assert swept_keys(runs) == ["optimizer.lr"]  # mixup and data are the same everywhere
    assert main([str(folder), "--no-plot", "--metric", "test/accuracy"]) == 0
    assert not (folder / "compare.png").exists()
    with (folder / "compare.csv").open() as handle:
        assert [row["trial"] for row in csv.DictReader(handle)] == ["1", "0", "2"]


def test_cli_errors_and_module_entry(tmp_path, sweep_folder):
    assert main([str(tmp_path / "missing")]) == 1
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "autotimm.compare", str(sweep_folder), "--out", str(tmp_path / "o")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        "compare.csv",
        "compare.png",
        "best_config.yaml",
    }


def make_pruned(folder: Path, trial: int, lr: float, value: float) -> Path:
    """A sweep trial the pruner stopped after two epochs (its record has no objective value)."""
    run = folder / f"trial_{trial:04d}"
    params = {"optimizer.lr": lr, "regularization.mixup_alpha": 0.3}
    record = RunRecord(
        status="pruned",
        objective=Objective("val/accuracy", None, "max"),
        run_dir=str(run),
        overrides=[f"optimizer.lr={lr}", "regularization.mixup_alpha=0.3", f"sweep.trial={trial}"],
        epochs=2,
        pruned=Pruned(epoch=1, value=value),
        sweep=SweepInfo(name="quick", trial=trial, params=params),
    )
    write_record(run, record)
    write_metrics(run, [value / 2, value])
    return run


def test_pruned_runs_rank_after_completed_ones_with_their_curves(sweep_folder, capsys, monkeypatch):
    make_pruned(sweep_folder, 5, 1e-2, 0.95)  # better than any completed run: still after them
    make_pruned(sweep_folder, 6, 2e-2, 0.40)
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    report = compare(sweep_folder)
    out = capsys.readouterr().out
    rows = report["rows"]
    assert [r["trial"] for r in rows] == ["1", "0", "2", "5", "6", "3", "4"]
    assert [r["status"] for r in rows[3:5]] == ["pruned", "pruned"]
    assert [r["rank"] for r in rows] == [1, 2, 3, None, None, None, None]
    assert rows[3]["objective"] == pytest.approx(0.95)  # the value it was pruned at
    assert "1 pruned" not in out and "2 pruned" in out  # the table's title counts them
    assert out.count("pruned") >= 3  # title + one status cell per pruned run

    with (sweep_folder / "compare.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["trial"] for row in table][3:5] == ["5", "6"]
    assert table[3]["status"] == "pruned" and float(table[3]["objective"]) == pytest.approx(0.95)

    (figure,) = figures
    labels = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
    assert {"trial 5 (pruned)", "trial 6 (pruned)", "trial 1 (best)"} <= set(labels)
    best = yaml.safe_load((sweep_folder / "best_config.yaml").read_text())
    assert best["optimizer"]["lr"] == pytest.approx(3e-2)  # a completed run, not trial 5


@pytest.mark.parametrize(
    "content", ["{not json", '{"status": "exploded", "objective": {"name": "val/accuracy"}}']
)
def test_unreadable_record_is_shown_last(sweep_folder, content, capsys):
    broken = sweep_folder / "trial_0009"
    broken.mkdir()
    record_path(broken).write_text(content)
    rows = compare(sweep_folder, make_plot=False)["rows"]
    assert rows[-1]["trial"] == "trial_0009" and rows[-1]["status"] == "unreadable"
    assert [r["trial"] for r in rows][:3] == ["1", "0", "2"]
    assert "unreadable" in capsys.readouterr().out


def test_compare_reads_runs_only_through_the_record_api():
    import autotimm.compare

    for source in Path(autotimm.compare.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert "results.json" not in text and "import json" not in text, source


@pytest.mark.slow
def test_best_config_reruns_with_one_command(tmp_path, sweep_folder):
    """The written config is a complete primary config for train.py (a real short run)."""
    run_dir = make_run(tmp_path / "real", 0, 1e-3, 0.0, 0.5, "completed")
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "data=synthetic", "--cfg", "job"],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (run_dir / ".hydra" / "config.yaml").write_text(proc.stdout)  # a real composed config
    compare(run_dir.parent, show=False, make_plot=False)
    overrides = [
        "data.synthetic_size=64",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "print_config=false",
    ]
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "--config-dir", str(run_dir.parent)]
        + ["--config-name", "best_config", *overrides],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "outputs" / "runs").glob(f"*/*/{RESULTS_FILE}")
    assert read_record(results.parent).status == "completed"


# ---------------------------------------------------------------- Optuna's own plots

SINGLE_PNGS = {
    "optuna_history.png",
    "optuna_importances.png",
    "optuna_parallel.png",
    "optuna_intermediate.png",
}


def _curve(trial) -> float:
    """A cheap objective that reports a curve per epoch; the median pruner stops bad ones."""
    import optuna

    lr = trial.suggest_float("optimizer.lr", 1e-4, 1.0, log=True)
    mixup = trial.suggest_categorical("regularization.mixup_alpha", [0.0, 0.2, 0.4])
    quality = 1.0 / (1.0 + abs(math.log10(lr) + 2.0)) - mixup / 10
    for epoch in range(4):
        value = quality * (epoch + 1) / 4
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return quality


def make_study(
    folder: Path, n_trials: int = 12, directions=None, pruner=True, file="study.journal"
) -> str:
    """A real Optuna study in `folder` (a sweep's default journal file, or SQLite's
    study.db) and its optimization_results.yaml."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    kind = "journal:" if file.endswith(".journal") else "sqlite:///"
    storage = f"{kind}{folder / file}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="quick",
        storage=open_storage(storage),
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if pruner
        else None,
        **({"directions": directions} if directions else {"direction": "maximize"}),
    )
    if directions:
        study.optimize(_two_objectives, n_trials=n_trials)
    else:
        study.optimize(_curve, n_trials=n_trials)
    summary = {"name": "optuna", "study_name": "quick", "storage": storage}
    if directions:
        summary["optimized_metric"] = ["val/accuracy", "model/latency_ms"]
    (folder / "optimization_results.yaml").write_text(yaml.safe_dump(summary))
    return storage


def _two_objectives(trial) -> tuple[float, float]:
    """Accuracy against latency: larger models are better and slower."""
    width = trial.suggest_int("model.width", 1, 64)
    lr = trial.suggest_float("optimizer.lr", 1e-4, 1.0, log=True)
    accuracy = 1.0 - 1.0 / width - abs(math.log10(lr) + 2.0) / 10
    return accuracy, float(width) * 0.5


def study_runs(folder: Path, storage: str) -> None:
    """A run folder (a run record) for every finished trial of the study."""
    import optuna

    study = optuna.load_study(study_name="quick", storage=open_storage(storage))
    for trial in study.trials:
        lr = trial.params["optimizer.lr"]
        if trial.state == optuna.trial.TrialState.PRUNED:
            value = trial.intermediate_values[max(trial.intermediate_values)]
            make_pruned(folder, trial.number, lr, value)
        else:
            value = trial.values[0]
            mixup = trial.params.get("regularization.mixup_alpha", 0.0)
            make_run(folder, trial.number, lr, mixup, value, "completed")


def assert_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", path
        width, height = image.size
    assert width > 100 and height > 100, (path, image.size)


def test_sweep_folder_gets_optunas_plots(tmp_path, capsys, recwarn):
    folder = tmp_path / "sweeps" / "quick"
    storage = make_study(folder)
    import optuna

    states = [
        t.state for t in optuna.load_study(study_name="quick", storage=open_storage(storage)).trials
    ]
    assert optuna.trial.TrialState.PRUNED in states  # the intermediate plot shows pruned curves
    study_runs(folder, storage)

    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    for name in SINGLE_PNGS | {"compare.png"}:
        assert_png(folder / name)
    assert not (folder / "optuna_pareto.png").exists()  # one objective: no front
    assert "skipped" not in out and "pareto" not in out
    from optuna.exceptions import ExperimentalWarning

    assert not [w for w in recwarn if issubclass(w.category, ExperimentalWarning)]
    with (folder / "compare.csv").open() as handle:
        assert "pareto" not in next(csv.DictReader(handle))


def test_optuna_plots_do_not_change_compare_png_style(tmp_path):
    """Optuna switches matplotlib to ggplot; compare.png drawn after it stays as it was."""
    import matplotlib

    folder = tmp_path / "sweeps" / "quick"
    study_runs(folder, make_study(folder, n_trials=4))
    style = dict(matplotlib.rcParams)
    compare(folder, show=False)
    assert dict(matplotlib.rcParams) == style


def test_plots_optuna_cannot_draw_are_skipped_with_a_note(tmp_path, capsys):
    folder = tmp_path / "sweeps" / "quick"
    import optuna

    storage = make_study(folder, n_trials=0)
    study = optuna.load_study(study_name="quick", storage=open_storage(storage))
    trial = study.ask({"optimizer.lr": optuna.distributions.LogUniformDistribution(1e-4, 1)})
    study.tell(trial, 0.7)  # one completed trial, nothing reported along the way
    make_run(folder, 0, trial.params["optimizer.lr"], 0.0, 0.7, "completed")

    report = compare(folder)
    out = capsys.readouterr().out
    assert_png(folder / "optuna_history.png")
    assert_png(folder / "optuna_parallel.png")
    assert not (folder / "optuna_importances.png").exists()
    assert not (folder / "optuna_intermediate.png").exists()
    assert "optuna_importances.png skipped" in out and "1 completed trial(s), 2 needed" in out
    assert "optuna_intermediate.png skipped" in out and "no trial reported" in out
    assert len(report["notes"]) == 2 and all("\n" not in note for note in report["notes"])


def test_a_plot_optuna_fails_on_is_a_note_not_a_crash(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    folder = tmp_path / "sweeps" / "quick"
    study_runs(folder, make_study(folder, n_trials=4))

    def broken(study, **kwargs):
        plt.subplots()  # a figure opened before the failure is closed again
        raise ValueError("cannot draw\nsecond line")

    monkeypatch.setattr(vis, "plot_optimization_history", broken)
    open_before = plt.get_fignums()  # earlier tests may leave figures open
    report = compare(folder, show=False)
    assert report["notes"] == [
        "optuna_history.png skipped (optimization history): Optuna cannot draw it: "
        "ValueError: cannot draw"
    ]
    assert not (folder / "optuna_history.png").exists()
    assert_png(folder / "optuna_parallel.png")
    assert plt.get_fignums() == open_before


def test_multi_objective_study_draws_the_front_and_marks_it(tmp_path, capsys):
    folder = tmp_path / "sweeps" / "pareto"
    storage = make_study(folder, n_trials=10, directions=["maximize", "minimize"], pruner=False)
    study_runs(folder, storage)
    import optuna

    study = optuna.load_study(study_name="quick", storage=open_storage(storage))
    front = {str(t.number) for t in study.best_trials}
    assert 0 < len(front) < 10

    report = compare(folder)
    out = capsys.readouterr().out
    assert_png(folder / "optuna_pareto.png")
    for objective in ("val_accuracy", "model_latency_ms"):
        for kind in ("history", "importances", "parallel"):
            assert_png(folder / f"optuna_{kind}_{objective}.png")
    assert not (folder / "optuna_history.png").exists()
    assert "optuna_intermediate.png skipped (intermediate values): trials of a multi" in out

    marked = {row["trial"] for row in report["rows"] if row["pareto"]}
    assert marked == front
    assert list(report["rows"][0])[:6] == [
        "rank",
        "trial",
        "status",
        "objective_name",
        "objective",
        "pareto",
    ]
    with (folder / "compare.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {row["trial"] for row in table if row["pareto"] == "True"} == front
    assert "pareto" in out and out.count("front") >= len(front)
    assert f"Pareto front: trial(s) {', '.join(sorted(front, key=int))}" in out


def test_folder_of_runs_without_a_study_says_so(sweep_folder, capsys):
    report = compare(sweep_folder)  # its optimization_results.yaml names no study
    out = capsys.readouterr().out
    assert "no Optuna plots: no study in" in out
    assert report["notes"] == [next(line for line in out.splitlines() if "no Optuna" in line)]
    assert not list(sweep_folder.glob("optuna_*.png"))


def test_masked_storage_needs_the_storage_option(tmp_path, capsys):
    folder = tmp_path / "sweeps" / "quick"
    storage = make_study(folder, n_trials=6, file="study.db")
    study_runs(folder, storage)
    (folder / "study.db").rename(tmp_path / "elsewhere.db")  # as on a PostgreSQL server
    summary = {"name": "optuna", "study_name": "quick", "storage": "postgresql://u:***@db/s"}
    (folder / "optimization_results.yaml").write_text(yaml.safe_dump(summary))

    compare(folder, make_plot=True)
    out = capsys.readouterr().out
    assert "postgresql://u:***@db/s hides its password: pass --storage URL" in out
    assert not list(folder.glob("optuna_*.png"))

    assert main([str(folder), "--storage", f"sqlite:///{tmp_path / 'elsewhere.db'}"]) == 0
    assert_png(folder / "optuna_history.png")


def test_moved_sweep_folder_opens_its_own_study_db(tmp_path):
    folder = tmp_path / "sweeps" / "quick"
    study_runs(folder, make_study(folder, n_trials=4))
    moved = tmp_path / "copied" / "quick"
    moved.parent.mkdir()
    folder.rename(moved)  # the yaml still names the old database path
    assert main([str(moved), "--out", str(tmp_path / "out")]) == 0
    assert_png(tmp_path / "out" / "optuna_history.png")


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:///{tmp}/missing.db", "no study file at"),
        ("journal:{tmp}/missing.journal", "no study file at"),
        ("nosuchdb://host/x", "cannot open a study in nosuchdb://host/x"),
        ("sqlite:///{tmp}/other.db", "no study 'quick' in sqlite:///"),
    ],
)
def test_bad_storage_option_is_a_clear_error(tmp_path, capsys, storage, message):
    import optuna

    folder = tmp_path / "sweeps" / "quick"
    study_runs(folder, make_study(folder, n_trials=3))
    optuna.create_study(study_name="another", storage=f"sqlite:///{tmp_path / 'other.db'}")
    url = storage.format(tmp=tmp_path)
    assert main([str(folder), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    if "other.db" in url:
        assert "studies there: ['another']" in err
    assert not (tmp_path / "missing.db").exists()  # not created by trying to open it


def test_import_autotimm_compare_is_light():
    code = (
        "import sys, autotimm.compare\n"
        "print(sorted(m for m in ('optuna', 'matplotlib', 'sqlalchemy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
