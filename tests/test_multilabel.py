"""Multi-label classification (issue 12 §2), in parts: the CSV layouts, seeded splits, the
loss with label smoothing, mixup/cutmix of multi-hot targets, thresholds, predictions, and
the refusals. Real digits as PNG files (tests/helpers_multilabel.py); no mocks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from autotimm.checks import ConfigValueError
from autotimm.data.datasets import file_items, targets_of
from tests.helpers_multilabel import LABELS, digit_labels, multi_hot_of, write_digits_multilabel

COUNT = 120  # images in the small data set (a few hundred ms to write)


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory) -> Path:
    return write_digits_multilabel(tmp_path_factory.mktemp("ml"), COUNT)


def _datamodule(csv_path: Path, **extra):
    from autotimm.data import ImageDataModule

    args = dict(source="csv", root=str(csv_path.parent), csv_file=csv_path.name)
    return ImageDataModule(
        **{**args, "multi_label": True, "backbone": "resnet18", "image_size": 32, **extra}
    )


def _rows(dataset) -> np.ndarray:
    return np.stack([dataset[i][1].numpy() for i in range(len(dataset))])


def test_delimited_labels_become_multi_hot_targets_over_seeded_splits(digits_csv):
    dm = _datamodule(digits_csv, val_fraction=0.2, test_fraction=0.2)
    assert dm.class_names == LABELS and dm.num_classes == 13  # the sorted union
    expected = multi_hot_of(digits_csv)
    paths = [str(p) for p in _datamodule(digits_csv).train_dataset.base.base.paths]
    by_path = {Path(p).name: row for p, row in zip(paths, expected, strict=True)}
    seen = []
    for split in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        base = split.base  # SubsetDataset over the CSV's files
        names = [Path(base.base.paths[i]).name for i in base.indices]
        rows = _rows(split)
        assert rows.dtype == np.float32 and rows.shape == (len(split), 13)
        assert np.array_equal(rows, np.stack([by_path[n] for n in names]))
        seen += names
    assert sorted(seen) == sorted(by_path) and len(set(seen)) == COUNT  # disjoint, covering
    again = _datamodule(digits_csv, val_fraction=0.2, test_fraction=0.2)
    assert list(again.val_dataset.base.indices) == list(dm.val_dataset.base.indices)
    other = _datamodule(digits_csv, val_fraction=0.2, test_fraction=0.2, seed=7)
    assert list(other.val_dataset.base.indices) != list(dm.val_dataset.base.indices)
    # stratified on each image's rarest label: every digit reaches the validation split
    assert set(targets_of(dm.val_dataset)) == set(range(10))


def test_label_columns_and_other_delimiters_give_the_same_targets(tmp_path, digits_csv):
    spaced = _rows(_datamodule(digits_csv).train_dataset)
    columns = write_digits_multilabel(tmp_path / "cols", COUNT, columns=True)
    by_columns = _datamodule(columns, label_columns=LABELS[::-1])  # order given: irrelevant
    assert by_columns.class_names == LABELS
    assert np.array_equal(_rows(by_columns.train_dataset), spaced)
    semi = write_digits_multilabel(tmp_path / "semi", COUNT, delimiter=";")
    by_semicolon = _datamodule(semi, label_delimiter=";")
    assert np.array_equal(_rows(by_semicolon.train_dataset), spaced)


def test_an_image_may_have_no_label(tmp_path, digits_csv):
    rows = list(csv.reader(digits_csv.open()))
    rows[1][1] = ""  # the first image: none of the labels
    path = tmp_path / "some_empty.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (tmp_path / "images").symlink_to(digits_csv.parent / "images")
    dm = _datamodule(path, val_fraction=0.0, test_fraction=0.0)
    paths, _ = file_items(dm.train_dataset.base)
    first = [i for i, p in enumerate(paths) if p.name == "0000.png"][0]
    assert dm.train_dataset[first][1].sum() == 0
    assert targets_of(dm.train_dataset)[first] == -1  # its own stratum


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"source": "image_folder"}, "data.multi_label=True: source 'image_folder' has one"),
        ({"source": "digits"}, "accepted sources for multi-label data: ['csv']"),
        ({"class_weights": "auto"}, "data.class_weights='auto': does not work with data.multi"),
        ({"sampler": "balanced"}, "data.sampler='balanced': does not work with data.multi_label"),
        ({"label_delimiter": ""}, "data.label_delimiter='': must be a non-empty string"),
        ({"label_columns": ["a", "a"]}, "must be a list of distinct column names"),
        ({"multi_label": False, "label_columns": ["a"]}, "needs data.multi_label=true"),
        ({"multi_label": "yes"}, "data.multi_label='yes': must be true or false"),
    ],
)
def test_bad_data_options_are_refused_before_loading(digits_csv, extra, expected):
    with pytest.raises(ConfigValueError) as info:
        _datamodule(digits_csv, **extra)
    assert expected in str(info.value)


def test_bad_label_columns_name_the_column_and_row(tmp_path):
    columns = write_digits_multilabel(tmp_path, 10, columns=True)
    with pytest.raises(ValueError, match=r"no column\(s\) \['cat'\]"):
        _datamodule(columns, label_columns=["cat", "odd"]).setup()
    text = columns.read_text().splitlines()
    text[3] = text[3][: text[3].rindex(",")] + ",yes"
    columns.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"column 'odd' row 3 holds 'yes'; label columns hold 0"):
        _datamodule(columns, label_columns=LABELS).setup()
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\nimages/0000.png,\nimages/0001.png, \n")
    with pytest.raises(ValueError, match=r"no labels in .*empty.csv.* \(column 'label'\)"):
        _datamodule(empty).setup()


# ---------------------------------------------------------------- the model


def _model(**extra):
    from autotimm import ImageClassifier

    return ImageClassifier("resnet18", num_classes=3, metrics=[], multi_label=True, **extra)


def test_loss_is_bce_with_targets_smoothed_towards_one_half():
    model = _model(label_smoothing=0.2)
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    smoothed = target * 0.8 + 0.1  # 1 -> 0.9, 0 -> 0.1
    p = torch.sigmoid(logits)
    by_hand = -(smoothed * p.log() + (1 - smoothed) * (1 - p).log()).mean()
    assert torch.allclose(model.criterion(logits, target), by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="multi-label targets must be multi-hot"):
        model.criterion(logits, torch.tensor([0, 2]))


def test_probabilities_are_sigmoids_and_labels_use_each_threshold():
    model = _model(label_threshold=[0.5, 0.9, 0.1]).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        probs = model.predict_proba(images)
        assert torch.allclose(probs, torch.sigmoid(logits))
        assert torch.allclose(model.predict_step((images, None), 0), probs)
        labels = model.predict_labels(images)
    expected = (probs > torch.tensor([0.5, 0.9, 0.1])).long()
    assert torch.equal(labels, expected)
    assert not hasattr(model, "val_confusion")  # no confusion figure for multi-label


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"label_threshold": 1.5}, "label_threshold=1.5: must be a probability in (0, 1)"),
        ({"label_threshold": [0.5, 0.5]}, "has 2 entries, the model has 3 labels"),
        ({"class_weights": [1.0, 2.0, 1.0]}, "multi-label training takes none"),
        ({"multi_label": 1}, "multi_label=1: must be true or false"),
        ({"multi_label": False, "label_threshold": 0.7}, "is for multi-label models only"),
    ],
)
def test_bad_model_options_are_refused(extra, expected):
    from autotimm import ImageClassifier

    args = {"multi_label": True, **extra}
    with pytest.raises(ConfigValueError) as info:
        ImageClassifier("resnet18", num_classes=3, metrics=[], **args)
    assert expected in str(info.value)


# ---------------------------------------------------------------- mixup / cutmix


def _batch(n: int = 8, labels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # distinct constant images: image i is all i+1, so every pixel tells its source
    images = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 8, 8)
    target = (torch.rand(n, labels, generator=generator) > 0.5).float()
    return images.contiguous(), target


def test_mixup_mixes_multi_hot_targets_with_the_images_lambda():
    from autotimm.model.regularization import BatchMixer

    images, target = _batch()
    mixer = BatchMixer(5, mixup_alpha=0.4, cutmix_alpha=0.0, label_smoothing=0.1, multi_label=True)
    mixed, soft = mixer(images, target)
    # mixed image i = lam * x_i + (1 - lam) * x_{n-1-i}: read lam back from the pixels
    first, last = images[0, 0, 0, 0], images[-1, 0, 0, 0]
    lam = float((mixed[0, 0, 0, 0] - last) / (first - last))
    smooth = target * 0.9 + 0.05
    assert torch.allclose(soft, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-5)
    assert torch.equal(images, _batch()[0])  # the caller's batch is left alone


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_cutmix_targets_follow_the_pasted_area(mode):
    from autotimm.model.regularization import BatchMixer

    images, target = _batch()
    mixer = BatchMixer(5, 0.0, cutmix_alpha=1.0, label_smoothing=0.0, mode=mode, multi_label=True)
    torch.manual_seed(3)
    np.random.seed(3)
    mixed, soft = mixer(images, target)
    for i in range(len(images)):
        own = float((mixed[i] == images[i]).float().mean())  # the share of image i kept
        expected = own * target[i] + (1 - own) * target[len(images) - 1 - i]
        assert torch.allclose(soft[i], expected, atol=1e-5), (i, own)


def test_odd_batches_and_mixing_off_give_smoothed_plain_targets():
    from autotimm.model.regularization import BatchMixer

    images, target = _batch(7)
    mixer = BatchMixer(5, 0.4, 1.0, label_smoothing=0.2, multi_label=True)
    mixed, soft = mixer(images, target)
    assert mixed is images and torch.allclose(soft, target * 0.8 + 0.1)
    mixer.enabled = False  # regularization.mixup_off_epoch reached
    images, target = _batch(8)
    mixed, soft = mixer(images, target)
    assert torch.equal(mixed, images) and torch.allclose(soft, target * 0.8 + 0.1)


def test_a_training_step_with_mixup_takes_bce_on_mixed_targets():
    model = _model(mixup_alpha=0.4, label_smoothing=0.1)
    images, target = torch.randn(4, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]] * 2)
    torch.manual_seed(0)
    np.random.seed(0)
    loss = model.training_step((images, target), 0)
    torch.manual_seed(0)
    np.random.seed(0)
    mixed, soft = model.mixer(images, target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(model(mixed), soft)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_digit_labels_are_learnable_tags():
    assert digit_labels(4) == ["4", "even"] and digit_labels(7) == ["7", "odd", "big"]


# ---------------------------------------------------------------- prediction output


def _trained(multi_label: bool):
    from autotimm import ImageClassifier
    from autotimm.inference.checkpoint import TrainedModel

    threshold = {"label_threshold": 0.4} if multi_label else {}
    model = ImageClassifier("resnet18", 3, [], multi_label=multi_label, **threshold)
    hparams = dict(model.hparams)
    return TrainedModel(model, ["a", "b", "c"], {}, Path("m.ckpt"), hparams)


@pytest.mark.parametrize(
    ("multi_label", "top_k", "threshold", "expected"),
    [
        (True, 3, None, "--top-k 3: m.ckpt is a multi-label model"),
        (True, None, 1.5, "--threshold 1.5: must be a probability in (0, 1)"),
        (False, None, 0.3, "--threshold 0.3: m.ckpt is a single-label model"),
        (False, 0, None, "--top-k must be >= 1, got 0"),
    ],
)
def test_prediction_options_that_do_not_fit_the_model_are_refused(
    multi_label, top_k, threshold, expected
):
    from autotimm.predict import checked_output_options
    from autotimm.user_errors import UserError

    with pytest.raises(UserError) as info:
        checked_output_options(_trained(multi_label), top_k, threshold)
    assert expected in str(info.value)
    assert checked_output_options(_trained(False), None, None) == 5  # the single-label default


def test_multi_label_rows_and_csv_list_every_label(tmp_path):
    from autotimm.inference.writers import multi_label_rows, summary, write_predictions
    from autotimm.predict import _rows

    probs = torch.tensor([[0.9, 0.35, 0.45], [0.1, 0.2, 0.3]])
    rows = _rows(_trained(True), [Path("x.png"), Path("y.png")], probs, 0, None)
    assert [r.labels for r in rows] == [["a", "c"], []]  # the model's threshold, 0.4
    assert [r.labels for r in _rows(_trained(True), [Path("x.png")] * 2, probs, 0, 0.25)] == [
        ["a", "b", "c"],
        ["c"],
    ]
    out = write_predictions(tmp_path / "p.csv", rows, 5, delimiter=";")
    lines = out.read_text().splitlines()
    assert lines[0] == "path,labels,prob_a,prob_b,prob_c"
    assert lines[1] == "x.png,a;c,0.9,0.35,0.45" and lines[2].startswith("y.png,,0.1,")
    text = summary(rows, 0, out)
    assert "(none)" in text and " a " in text
    over = torch.tensor([[1, 0, 0]])
    assert multi_label_rows([Path("z.png")], probs[:1], ["a", "b", "c"], over)[0].labels == ["a"]
