"""Multi-label data (`data.multi_label=true`, CSV sources): label sets -> multi-hot targets.

Two CSV layouts:
- one label column whose cells hold several labels separated by `label_delimiter`
  (default a space; an empty cell: an image with none of the labels);
- `label_columns=[a, b, ...]`: one 0/1 column per label (the column names are the labels).

Label names are the sorted union of the labels of all splits (numeric labels sort as
numbers, see `label_mapping`); targets are float32 multi-hot rows (N, labels). Splits are
stratified on the rarest label each image has (`rarest_label`), seeded like single-label ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from autotimm.checks import ConfigValueError
from autotimm.user_errors import UserError

# the sources whose items can carry several labels
MULTI_LABEL_SOURCES = ("csv",)
BINARY_VALUES = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


def check_multi_label_options(
    source: str,
    multi_label: Any,
    label_delimiter: Any,
    label_columns: Any,
    class_weights: Any = None,
    sampler: Any = None,
) -> None:
    """The datamodule's multi-label arguments, before any data loads (errors name the key)."""
    if not isinstance(multi_label, bool):
        raise ConfigValueError("data.multi_label", multi_label, "must be true or false")
    if label_columns is not None and not multi_label:
        raise ConfigValueError(
            "data.label_columns",
            label_columns,
            "one 0/1 column per label needs data.multi_label=true",
        )
    if not multi_label:
        return
    if source not in MULTI_LABEL_SOURCES:
        raise ConfigValueError(
            "data.multi_label",
            multi_label,
            f"source {source!r} has one class per image; accepted sources for multi-label "
            f"data: {list(MULTI_LABEL_SOURCES)} (a CSV with several labels per row)",
        )
    if not isinstance(label_delimiter, str) or label_delimiter == "":
        raise ConfigValueError(
            "data.label_delimiter", label_delimiter, "must be a non-empty string, e.g. ' ' or ';'"
        )
    if label_columns is not None and (
        not isinstance(label_columns, (list, tuple))
        or len(label_columns) < 1
        or not all(isinstance(c, str) and c for c in label_columns)
        or len(set(label_columns)) != len(label_columns)
    ):
        raise ConfigValueError(
            "data.label_columns",
            label_columns,
            "must be a list of distinct column names (strings: quote names that look like "
            """numbers, 'data.label_columns=["0","1"]')""",
        )
    for key, value, instead in (
        ("data.class_weights", class_weights, "per-label weights are not supported"),
        ("data.sampler", sampler, "a class-balanced sampler needs one class per image"),
    ):
        if value is not None:
            raise ConfigValueError(
                key, value, f"does not work with data.multi_label=true ({instead}); leave it null"
            )


def split_labels(cell: str, delimiter: str) -> list[str]:
    """The labels of one cell (`"cat dog"` -> `["cat", "dog"]`); empty parts dropped."""
    return [part.strip() for part in str(cell).split(delimiter) if part.strip()]


def label_sets_from_cells(cells: Iterable[str], delimiter: str) -> list[list[str]]:
    return [split_labels(cell, delimiter) for cell in cells]


def label_sets_from_columns(frame: Any, columns: Sequence[str], where: str) -> list[list[str]]:
    """The labels of each row of `frame` whose 0/1 `columns` are 1 (other values refused)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{where} has no column(s) {missing} named in data.label_columns "
            f"(columns: {list(frame.columns)})"
        )
    sets: list[list[str]] = [[] for _ in range(len(frame))]
    for column in columns:
        for row, value in enumerate(frame[column]):
            flag = BINARY_VALUES.get(str(value).strip())
            if flag is None:
                raise UserError(
                    f"{where}: column {column!r} row {row + 1} holds {value!r}; "
                    "label columns hold 0 or 1"
                )
            if flag:
                sets[row].append(column)
    return sets


def multi_hot(label_sets: Sequence[Sequence[str]], to_index: dict[str, int], n: int) -> np.ndarray:
    """(images, n) float32 rows with 1 at the index of each label of the image."""
    targets = np.zeros((len(label_sets), n), dtype=np.float32)
    for row, labels in enumerate(label_sets):
        targets[row, [to_index[label] for label in labels]] = 1.0
    return targets


def rarest_label(targets: np.ndarray) -> np.ndarray:
    """One stratum per image: its rarest label (by count in `targets`), -1 without labels.

    Stratifying on it keeps every rare label in each split as far as the counts allow
    (a common simplification of iterative multi-label stratification).
    """
    targets = np.asarray(targets)
    if len(targets) == 0:
        return np.zeros(0, dtype=np.int64)
    counts = targets.sum(axis=0)
    # labels the image lacks get an infinite count, so argmin finds its rarest own label
    masked = np.where(targets > 0, counts[None, :], np.inf)
    strata = masked.argmin(axis=1).astype(np.int64)
    strata[~(targets > 0).any(axis=1)] = -1
    return strata
