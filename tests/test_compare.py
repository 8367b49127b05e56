"""`python -m autotimm.compare`: ranked table, compare.csv, compare.png, best_config.yaml.

Built on hand-made run folders (a run record, metrics.csv, .hydra/) so it needs no
training; test_sweeps.py compares a real sweep's folder too.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotimm.compare import compare, find_runs, main, swept_keys
from autotimm.results import (
    RESULTS_FILE,
    Objective,
    Pruned,
    RunRecord,
    SweepInfo,
    read_record,
    record_path,
    write_record,
)
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
