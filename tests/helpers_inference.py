"""Shared data for the predict/export/model-card tests: one real trained run per session.

sklearn's real digits written as PNG files: `train/<class>/` trains a timm `test_resnet`
through train.py's app (`run_app`, in this process: a real run directory, results.json
and checkpoints); `new/<label>_<n>.png` holds digits the run never saw, labelled in the
file name, for prediction. The first test that asks trains it; the others reuse it (its
folder is the first test's tmp_path, which pytest keeps for the session).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import FAST

HELD_OUT = 360  # the last digits: never in the training folder
TRAIN_OVERRIDES = [
    *FAST,
    "data=image_folder",
    "backbone.model_name=test_resnet",
    "data.image_size=32",
    "data.hflip=0.0",  # digits are not mirror-symmetric
    "data.scale=[0.75,1.0]",
    "data.batch_size=32",
    "optimizer.lr=0.003",
    "trainer.max_epochs=3",
    "measure_cost=true",
]


@dataclass
class TrainedRun:
    """The session's trained run and its image folders."""

    run_dir: Path
    checkpoint: Path
    new_images: Path  # held-out digits, label in the file name
    root: Path
    card_at_end: bool  # whether the run itself wrote MODEL_CARD.md


_CACHE: dict[str, TrainedRun] = {}


def label_of(path: str | Path) -> str:
    """The true label of a held-out digit file (`<label>_<n>.png`)."""
    return Path(path).name.split("_")[0]


def write_digits(root: Path) -> Path:
    """train/<class>/<n>.png (1,437 digits) and new/<label>_<n>.png (the last 360)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    split = len(pixels) - HELD_OUT
    for n, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        if n < split:
            folder = root / "train" / str(label)
            name = f"{n}.png"
        else:
            folder = root / "new"
            name = f"{label}_{n}.png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
    return root / "new"


def trained_run(run_app, tmp_path: Path) -> TrainedRun:
    """Train the session's run once (about 10 s) and return it."""
    if "run" in _CACHE:
        return _CACHE["run"]
    from autotimm.records.results import read_record

    root = tmp_path / "digits"
    new_images = write_digits(root)
    app = run_app(*TRAIN_OVERRIDES, f"data.root={root / 'train'}", name="trained")
    assert app.code == 0, app.output[-3000:]
    record = read_record(app.run_dir)
    assert record is not None and record.status == "completed", record
    card = (app.run_dir / "MODEL_CARD.md").is_file()
    run = TrainedRun(app.run_dir, Path(str(record.best_model_path)), new_images, root, card)
    _CACHE["run"] = run
    return run


def accuracy(rows) -> float:
    """Share of prediction rows whose label matches the file name's."""
    return sum(r.label == label_of(r.path) for r in rows) / len(rows)


FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot")  # fmt: skip


def write_fashion(root: Path, n_train: int, n_new: int) -> Path:
    """Fashion-MNIST (Debian's IDX files) as PNGs: train/<class>/ from the training set,
    new/<class>_<n>.png from the official test set (never trained on)."""
    from autotimm.data.idx import read_idx
    from autotimm.data.sources.builtin import FASHION_MNIST_ROOT

    source = Path(FASHION_MNIST_ROOT)
    parts = {
        "train": (read_idx(source / "train-images-idx3-ubyte.gz")[:n_train],
                  read_idx(source / "train-labels-idx1-ubyte.gz")[:n_train]),
        "new": (read_idx(source / "t10k-images-idx3-ubyte.gz")[:n_new],
                read_idx(source / "t10k-labels-idx1-ubyte.gz")[:n_new]),
    }  # fmt: skip
    for part, (images, labels) in parts.items():
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            name = FASHION_CLASSES[label]
            folder = root / "train" / name if part == "train" else root / "new"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(
                folder / (f"{n}.png" if part == "train" else f"{name}_{n}.png")
            )
    return root / "new"
