"""A small real multi-label data set: sklearn's digits as PNGs, tagged with learnable labels.

Each image carries its digit ("0".."9"), "even" or "odd", and "big" when the digit is >= 5:
two or three labels per image, 13 labels in all.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = sorted([str(d) for d in range(10)] + ["big", "even", "odd"])


def digit_labels(digit: int) -> list[str]:
    tags = [str(digit), "even" if digit % 2 == 0 else "odd"]
    return tags + (["big"] if digit >= 5 else [])


def write_digits_multilabel(
    root: Path, count: int = 400, delimiter: str = " ", columns: bool = False
) -> Path:
    """`count` digits as PNGs under root/images and root/labels.csv (path, label).

    `columns`: one 0/1 column per label instead of one delimited label column.
    """
    from autotimm.data.sources import digits_arrays

    images, digits = digits_arrays()
    pixels = np.clip(np.round(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(min(count, len(digits))):
        name = f"images/{i:04d}.png"
        Image.fromarray(pixels[i]).save(root / name)
        rows.append((name, digit_labels(int(digits[i]))))
    path = root / "labels.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        if columns:
            writer.writerow(["path", *LABELS])
            writer.writerows([name, *(int(t in tags) for t in LABELS)] for name, tags in rows)
        else:
            writer.writerow(["path", "label"])
            writer.writerows([name, delimiter.join(tags)] for name, tags in rows)
    return path


def multi_hot_of(csv_path: Path) -> np.ndarray:
    """The (images, labels) 0/1 matrix a label column file describes, read independently."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[int(t in r["label"].split()) for t in LABELS] for r in rows])
