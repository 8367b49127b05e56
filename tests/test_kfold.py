"""k-fold cross-validation (issue 12 §4): folds of the pool, the kfold multirun, compare's
mean ± std. Real digits and image files; one real `python train.py -m +sweeps=kfold`."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from autotimm.checks import ConfigValueError
from autotimm.compare import compare
from autotimm.data import ImageDataModule
from autotimm.data.datasets import ArrayImageDataset, SubsetDataset
from autotimm.data.folds import check_fold_options, fold_numbers, pool_of
from autotimm.data.splits import stratified_split
from autotimm.records.results import Objective, RunRecord, SweepInfo, read_record, write_record
from tests.conftest import FAST
from tests.test_data import make_class_folders, split_paths
from tests.test_sweeps import sweep, sweep_dir


def base_ids(dataset) -> list[int]:
    """Indices into the source's own array behind a (transformed) split."""
    indices = None
    while not isinstance(dataset, ArrayImageDataset):
        if isinstance(dataset, SubsetDataset):
            indices = dataset.indices if indices is None else dataset.indices[indices]
        dataset = dataset.base
    return sorted(int(i) for i in (range(len(dataset)) if indices is None else indices))


# ------------------------------------------------------------------------- the folds


def test_folds_are_stratified_seeded_and_partition_the_items():
    labels = np.repeat(np.arange(4), [23, 11, 7, 40])
    numbers = fold_numbers(labels, 5, seed=3)
    assert sorted(set(numbers)) == [0, 1, 2, 3, 4]  # every item in exactly one fold
    sizes = np.bincount(numbers)
    assert sizes.max() - sizes.min() <= 1
    for cls in range(4):  # each class spread as evenly as its count allows
        per_fold = np.bincount(numbers[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.min() >= 1
    assert np.array_equal(numbers, fold_numbers(labels, 5, seed=3))
    assert not np.array_equal(numbers, fold_numbers(labels, 5, seed=4))


def test_digits_folds_hold_out_one_test_split_and_partition_the_pool():
    plain = ImageDataModule("digits", image_size=8, seed=7)
    pool = set(base_ids(plain.train_dataset)) | set(base_ids(plain.val_dataset))
    test = base_ids(plain.test_dataset)
    vals = []
    for fold in range(3):
        dm = ImageDataModule("digits", image_size=8, seed=7, folds=3, fold=fold)
        assert base_ids(dm.test_dataset) == test  # identical in every fold, never trained on
        train, val = set(base_ids(dm.train_dataset)), set(base_ids(dm.val_dataset))
        assert not train & val and train | val == pool
        vals.append(val)
        assert abs(len(val) - len(pool) / 3) <= 1
    assert not (vals[0] & vals[1] or vals[0] & vals[2] or vals[1] & vals[2])
    assert vals[0] | vals[1] | vals[2] == pool
    # limit caps the pool (then folds it) and the test split
    small = ImageDataModule("digits", image_size=8, seed=7, folds=3, fold=1, limit=90)
    assert len(small.train_dataset) + len(small.val_dataset) == 90
    assert len(small.val_dataset) == 30 and len(small.test_dataset) == 90


def test_a_fixed_val_folder_is_pooled_with_train(tmp_path):
    make_class_folders(tmp_path / "train", per_class=4)
    make_class_folders(tmp_path / "val", per_class=2)
    make_class_folders(tmp_path / "test", per_class=1)
    files = {p.resolve() for split in ("train", "val") for p in (tmp_path / split).rglob("*.*")}
    vals = []
    for fold in range(2):
        dm = ImageDataModule(
            "image_folder", root=str(tmp_path), image_size=12, batch_size=4, folds=2, fold=fold
        )
        train, val = set(split_paths(dm.train_dataset)), set(split_paths(dm.val_dataset))
        assert {p.resolve() for p in train | val} == files and not train & val
        assert {p.parent.parent.name for p in split_paths(dm.test_dataset)} == {"test"}
        assert sorted(int(t) for t in dm.val_dataset.targets) == [0] * 3 + [1] * 3
        vals.append(val)
    assert not vals[0] & vals[1]


def test_multi_label_targets_are_folded_by_label_pattern():
    rng = np.random.default_rng(0)
    multi_hot = (rng.random((60, 3)) > 0.5).astype(np.float32)
    numbers = fold_numbers(multi_hot, 3, seed=0)
    assert sorted(np.bincount(numbers)) == [20, 20, 20]
    for label in range(3):  # every label's positives are in every fold
        assert set(numbers[multi_hot[:, label] == 1]) == {0, 1, 2}
    assert sum(map(len, stratified_split(multi_hot, [0.2, 0.2], seed=0))) == 60
    # strata as targets_of gives them for multi-label data: -1 is "no label", not a class
    strata = np.array([-1] + [0, 1, 2] * 5)
    assert sorted(set(fold_numbers(strata, 5, seed=0))) == [0, 1, 2, 3, 4]

    class MultiHot:  # two parts of different bases: pooled as a concatenation
        def __init__(self, rows):
            self.targets = rows

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, index):
            return index, self.targets[index]

    pool = pool_of(MultiHot(multi_hot[:40]), MultiHot(multi_hot[40:]))
    assert len(pool) == 60 and np.array_equal(pool.targets, multi_hot)


def test_multi_label_folds_count_each_labels_positives_not_its_strata():
    """Label 0 is on every image but the rarest label of only 3 of them: 5 folds are fine
    (each fold's validation still holds label 0); label 2 on 3 images allows only 3."""
    from autotimm.data.datasets import targets_of
    from autotimm.data.folds import fold_splits
    from autotimm.data.sources.base import SourceSplits

    rows = np.zeros((40, 3), dtype=np.float32)
    rows[:, 0] = 1  # label 0 everywhere
    rows[3:, 1] = 1  # label 1 on 37 images: the rarest label of those
    data = type("Rows", (), {"targets": rows, "__len__": lambda self: 40})()
    assert (targets_of(data) == 0).sum() == 3  # label 0 is the stratum of 3 images only
    splits = SourceSplits(train=data, val=[], test=[], class_names=["a", "b", "c"])
    folded = fold_splits(splits, folds=5, fold=0, seed=0)
    assert len(folded.val) == 8 and folded.val.targets[:, 0].all()
    rows[:3, 2] = 1  # label 2 on 3 images
    with pytest.raises(ConfigValueError, match=r"the 3 image\(s\) of class 'c'.*accepted: 2\.\.3"):
        fold_splits(splits, folds=5, fold=0, seed=0)


# ---------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    "folds, fold, expected",
    [
        (None, 2, r"data\.fold=2: needs data\.folds"),
        (1, 0, r"data\.folds=1: must be an integer >= 2"),
        (3, None, r"data\.folds=3: needs data\.fold, one of 0\.\.2"),
        (3, 3, r"data\.fold=3: outside 0\.\.2"),
        (3, -1, r"data\.fold=-1: outside 0\.\.2"),
    ],
)
def test_bad_fold_settings_name_the_value_and_the_accepted_range(folds, fold, expected):
    with pytest.raises(ConfigValueError, match=expected):
        check_fold_options(folds, fold)


def test_more_folds_than_images_of_the_rarest_class_is_refused():
    labels = np.repeat(np.arange(3), [9, 3, 9])
    with pytest.raises(
        ConfigValueError, match=r"data\.folds=4: .*3 image\(s\) of class 'b'.*2\.\.3"
    ):
        fold_numbers(labels, 4, seed=0, class_names=["a", "b", "c"])
    dm = ImageDataModule("digits", image_size=8, folds=10, fold=0, limit=50)  # 5 per class
    with pytest.raises(ConfigValueError, match=r"data\.folds=10: .*accepted: 2\.\.5"):
        dm.setup()


def test_a_fold_without_folds_stops_the_run_with_one_line(run_app):
    run = run_app("data.fold=2", "print_config=false")
    assert run.code == 1
    assert "data.fold=2: needs data.folds" in run.output and "Traceback" not in run.output
    record = run.results()  # the failed run's record keeps its fold settings
    assert (record["status"], record["fold"], record["folds"]) == ("failed", 2, None)


# ----------------------------------------------------------------- compare's aggregate


def fold_record(folder: Path, lr: float, fold: int, accuracy: float | None) -> Path:
    """A hand-made k-fold run: its record, as train.py writes it."""
    run = folder / f"lr{lr}_fold{fold}"
    overrides = [f"data.fold={fold}", "+sweeps=kfold", "data.folds=3", f"optimizer.lr={lr}"]
    record = RunRecord(
        "completed" if accuracy is not None else "failed",
        Objective("val/accuracy", accuracy, "max"),
        str(run),
        overrides=overrides,
        fold=fold,
        folds=3,
        sweep=SweepInfo(name="kfold", params={"data.fold": fold}),
    )
    if accuracy is not None:
        record.val = {"val/accuracy": accuracy, "val/loss": 1 - accuracy}
        record.test = {"test/accuracy": accuracy - 0.1}
    else:
        record.failure = "MemoryError: x"
    write_record(run, record)
    config = {"data": {"folds": 3, "fold": fold}, "optimizer": {"lr": lr}, "sweep": {}}
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_compare_groups_folds_and_counts_only_completed_ones(tmp_path, capsys):
    for fold, accuracy in enumerate([0.8, 0.99, 0.7]):
        fold_record(tmp_path, 0.01, fold, accuracy)
    for fold, accuracy in enumerate([0.95, 0.93, None]):
        fold_record(tmp_path, 0.001, fold, accuracy)
    found = compare(tmp_path, make_plot=False)
    first, second = found["folds"]
    # every fold completed ranks first: lr=0.001's higher mean is over 2 of its 3 folds
    assert (first["optimizer.lr"], first["folds"], first["data.folds"]) == (0.01, 3, 3)
    assert (second["optimizer.lr"], second["folds"], second["rank"]) == (0.001, 2, 2)
    assert second["val/accuracy_mean"] == pytest.approx(0.94)
    assert second["val/accuracy_std"] == pytest.approx(statistics.stdev([0.95, 0.93]))
    assert first["test/accuracy_mean"] == pytest.approx(0.73)
    assert first["val/loss_std"] == pytest.approx(statistics.stdev([0.2, 0.01, 0.3]))
    printed = capsys.readouterr().out
    assert "k-fold: mean ± std" in printed
    for name in ("val/loss", "test/accuracy", "3/3", "2/3"):  # every metric, folds done
        assert name in printed
    assert len(found["rows"]) == 6  # the per-fold rows stay in compare.csv
    # best_config.yaml: the best configuration by its mean (not the best single fold,
    # lr=0.01 fold 1: 0.99, nor a mean over fewer folds), to train once without folds
    best = yaml.safe_load(found["files"]["best_config"].read_text())
    assert best["optimizer"]["lr"] == 0.01 and best["data"] == {"folds": None, "fold": None}
    # ranked by a loss: the lowest mean first
    by_loss = compare(tmp_path, metric="val/loss", make_plot=False, show=False)
    assert [r["optimizer.lr"] for r in by_loss["folds"]] == [0.01, 0.001]  # complete first
    # the per-run rows too: the lowest loss (lr=0.01, fold 1: 0.01) ranks first
    assert (by_loss["rows"][0]["optimizer.lr"], by_loss["rows"][0]["data.fold"]) == (0.01, 1)
    for fold, accuracy in enumerate([0.9, 0.9, 0.9]):
        fold_record(tmp_path, 0.1, fold, accuracy)
    by_loss = compare(tmp_path, metric="val/loss", make_plot=False, show=False)["folds"]
    assert [r["optimizer.lr"] for r in by_loss] == [0.1, 0.01, 0.001]  # loss 0.1 < 0.17


def test_compare_of_runs_without_folds_writes_no_fold_table(tmp_path):
    run = tmp_path / "run"
    write_record(run, RunRecord("completed", Objective("val/accuracy", 0.9), str(run)))
    found = compare(tmp_path, make_plot=False, show=False)
    assert found["folds"] == [] and not (tmp_path / "compare_folds.csv").exists()


# ------------------------------------------------------------------ the real multirun


@pytest.mark.slow  # a real 3-run multirun (~10 s unloaded): the default suite stays under 6 min
def test_kfold_multirun_trains_every_fold_and_compare_averages_them(tmp_path):
    """`python train.py -m +sweeps=kfold data.folds=3` on digits, then compare (about 15 s)."""
    overrides = [
        "+sweeps=kfold", "data.folds=3", "data.limit=120", "data.image_size=32",
        "data.batch_size=16", "backbone.model_name=test_resnet", "metrics=minimal",
        "trainer.max_epochs=1", "measure_cost=false", *FAST,
    ]  # fmt: skip
    sweep(tmp_path, *overrides)  # tests.test_sweeps: `python <repo>/train.py -m ...`
    (folder,) = sweep_dir(tmp_path, "kfold").iterdir()
    records = [read_record(p.parent) for p in sorted(folder.glob("*/results.json"))]
    assert sorted((r.fold, r.folds, r.status) for r in records) == [
        (f, 3, "completed") for f in range(3)
    ]
    assert sorted(r.sweep.params["data.fold"] for r in records) == [0, 1, 2]
    compare(folder, make_plot=False, show=False)
    with (folder / "compare_folds.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["folds"] == "3" and row["data.folds"] == "3"
    for name in ("val/accuracy", "val/loss", "test/accuracy"):
        section = "val" if name.startswith("val") else "test"
        values = [getattr(r, section)[name] for r in records]
        assert float(row[f"{name}_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row[f"{name}_std"]) == pytest.approx(statistics.stdev(values))
