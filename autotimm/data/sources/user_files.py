"""The user's own image files as sources: class folders (``image_folder``) and CSV lists."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from autotimm.data.datasets import FileImageDataset
from autotimm.data.files import IMAGE_EXTENSIONS, check_images, class_folders, scan_class_folders
from autotimm.data.sources.base import SourceOptions, SourceSplits, carve, train_val_test
from autotimm.user_errors import UserError

SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _require_dir(root: str | None, source: str) -> Path:
    """``root`` as an existing directory, or an error that names the path."""
    if not root:
        raise UserError(f"source {source!r} needs data.root (a folder), got none")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data root {path} for source {source!r} does not exist")
    return path


def _split_dir(root: Path, split: str) -> Path | None:
    """The folder for ``split`` under ``root`` (``val`` may be ``valid``/``validation``)."""
    for name in SPLIT_ALIASES[split]:
        if (root / name).is_dir():
            return root / name
    return None


def _files_dataset(paths: list[Path], labels: list[int], opts: SourceOptions) -> FileImageDataset:
    """A file dataset with missing/corrupt files reported or skipped (``skip_corrupt``)."""
    paths, labels = check_images(
        paths, labels, verify=opts.verify_images, skip_corrupt=opts.skip_corrupt
    )
    return FileImageDataset(paths, labels)


def _with_carved_splits(
    given: dict[str, FileImageDataset | None], opts: SourceOptions
) -> tuple[Dataset, Dataset, Dataset]:
    """Train/val/test where val or test, when not given, are carved from train."""
    train: Dataset = given["train"]  # type: ignore[assignment]
    val, test = given["val"], given["test"]
    fractions = [opts.test_fraction if test is None else 0.0,
                 opts.val_fraction if val is None else 0.0]  # fmt: skip
    if any(fractions):
        carved_test, carved_val, train = carve(train, fractions, opts.seed)
        test = carved_test if test is None else test
        val = carved_val if val is None else val
    empty = FileImageDataset([], [])
    return train, val if val is not None else empty, test if test is not None else empty


def load_image_folder(opts: SourceOptions) -> SourceSplits:
    """Class folders: ``root/{train,val,test}/<class>/*`` or ``root/<class>/*`` (split here).

    With the split layout ``train`` is required and a missing ``val``/``test`` is carved
    from it. Class names are the sorted union of the class folders of all splits.
    """
    root = _require_dir(opts.root, "image_folder")
    split_dirs = {split: _split_dir(root, split) for split in SPLIT_ALIASES}
    if split_dirs["train"] is None and (split_dirs["val"] or split_dirs["test"]):
        raise FileNotFoundError(f"{root} has val/test folders but no {root / 'train'} folder")
    folders = [d for d in split_dirs.values() if d is not None] or [root]
    class_names = sorted({name for folder in folders for name in class_folders(folder)})
    if not class_names:
        raise UserError(
            f"no class folders in {root}: expected {root}/<class>/<image> or "
            f"{root}/train/<class>/<image>"
        )
    scanned = {
        split: scan_class_folders(folder, class_names)
        for split, folder in (split_dirs.items() if split_dirs["train"] else [("train", root)])
        if folder is not None
    }
    if not scanned["train"][0]:
        where = split_dirs["train"] or root
        raise UserError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {where}"
        )
    if split_dirs["train"] is None:
        pool = _files_dataset(*scanned["train"], opts)
        train, val, test = train_val_test(pool, opts)
    else:
        given = {split: _files_dataset(*scanned[split], opts) if split in scanned else None
                 for split in SPLIT_ALIASES}  # fmt: skip
        train, val, test = _with_carved_splits(given, opts)
    return SourceSplits(train, val, test, class_names)


def _number(value: str) -> float | None:
    """``value`` as a finite number, or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def label_mapping(values: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """One class list for all splits, and raw label -> index.

    All-numeric labels sort numerically (2 before 10) and "2"/"2.0" are one class;
    otherwise labels sort as strings.
    """
    unique = {str(v).strip() for v in values}
    numbers = {v: _number(v) for v in unique}
    if unique and all(n is not None for n in numbers.values()):
        canonical = {
            v: str(int(n)) if float(n).is_integer() else repr(n)  # type: ignore[arg-type]
            for v, n in numbers.items()
        }
        names = sorted(set(canonical.values()), key=float)
    else:
        canonical = {v: v for v in unique}
        names = sorted(unique)
    index = {name: i for i, name in enumerate(names)}
    return names, {v: index[canonical[v]] for v in unique}


def _read_csv(path: Path, opts: SourceOptions):  # -> pandas.DataFrame
    """A CSV read as strings, checked for the configured columns."""
    import pandas as pd  # lazy: pandas is slow to import

    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    # label_columns (multi-label 0/1 columns) replace the label column
    columns = [opts.path_column] + ([] if opts.label_columns else [opts.label_column])
    for column in columns:
        if column not in frame.columns:
            raise UserError(
                f"{path} has no column {column!r} (columns: {list(frame.columns)}); "
                "set data.path_column / data.label_column"
            )
    blank = frame[opts.path_column].str.strip() == ""
    if not opts.multi_label:  # a multi-label image may have none of the labels
        blank |= frame[opts.label_column].str.strip() == ""
    if blank.any():
        raise UserError(
            f"{path}: empty path or label in data row(s) {list(frame.index[blank] + 1)[:10]}"
        )
    return frame


def _csv_split_of(value: str, path: Path) -> str:
    """Normalise a split-column value (``valid``/``validation`` -> ``val``)."""
    value = value.strip().lower()
    for split, aliases in SPLIT_ALIASES.items():
        if value in aliases:
            return split
    raise UserError(
        f"{path}: unknown split {value!r} (accepted: train, val/valid/validation, test)"
    )


def _csv_frames(opts: SourceOptions) -> dict[str, tuple[Any, Path]]:
    """The CSV rows of each split (or of one ``pool`` to split here) and the file they are from."""
    if opts.csv_file:
        csv_path = Path(opts.csv_file).expanduser()
        if opts.root and not csv_path.is_absolute():
            csv_path = Path(opts.root).expanduser() / csv_path
        frame = _read_csv(csv_path, opts)
        if opts.split_column in frame.columns:
            split_of = frame[opts.split_column].map(lambda v: _csv_split_of(v, csv_path))
            frames = {
                s: (frame[split_of == s], csv_path) for s in SPLIT_ALIASES if (split_of == s).any()
            }
            if "train" not in frames:
                raise UserError(f"{csv_path}: no rows with {opts.split_column}=train")
        else:
            frames = {"pool": (frame, csv_path)}
    else:
        root = _require_dir(opts.root, "csv")
        frames = {}
        for split in SPLIT_ALIASES:
            for alias in SPLIT_ALIASES[split]:
                if (root / f"{alias}.csv").is_file():
                    frames[split] = (_read_csv(root / f"{alias}.csv", opts), root / f"{alias}.csv")
                    break
        if "train" not in frames:
            raise FileNotFoundError(
                f"no {root / 'train.csv'}; give data.csv_file or put train.csv (and optionally "
                "val.csv, test.csv) in data.root"
            )
    return frames


def _csv_labels(frames: dict[str, tuple[Any, Path]], opts: SourceOptions):
    """Class names and, per frame, its targets: class indices, or multi-hot rows."""
    if not opts.multi_label:
        names, to_index = label_mapping(
            v for frame, _ in frames.values() for v in frame[opts.label_column]
        )
        return names, {
            key: [to_index[str(v).strip()] for v in frame[opts.label_column]]
            for key, (frame, _) in frames.items()
        }
    from autotimm.data.multilabel import (
        label_sets_from_cells,
        label_sets_from_columns,
        multi_hot,
    )

    sets = {
        key: label_sets_from_columns(frame, opts.label_columns, str(path))
        if opts.label_columns
        else label_sets_from_cells(frame[opts.label_column], opts.label_delimiter)
        for key, (frame, path) in frames.items()
    }
    every = opts.label_columns or [label for s in sets.values() for row in s for label in row]
    names, to_index = label_mapping(every)
    if not names:
        where = [str(path) for _, path in frames.values()]
        raise UserError(f"no labels in {where} (column {opts.label_column!r})")
    return names, {key: multi_hot(s, to_index, len(names)) for key, s in sets.items()}


def load_csv(opts: SourceOptions) -> SourceSplits:
    """Image paths and labels from CSV.

    Layouts, checked in this order:
    - ``csv_file`` set (absolute, or relative to ``root`` when given): one CSV. With a
      ``split_column`` (default ``split``: train / val / test) rows go to those splits;
      without it the rows are split here by ``val_fraction``/``test_fraction``.
    - otherwise ``root/train.csv`` (required), ``root/val.csv``, ``root/test.csv``.
    A split that is not given is carved from train. Relative image paths are resolved
    against the folder of the CSV that lists them. One label mapping covers all splits.
    With ``multi_label`` each row holds several labels (see ``autotimm.data.multilabel``).
    """
    frames = _csv_frames(opts)
    class_names, targets = _csv_labels(frames, opts)

    def files(key: str) -> FileImageDataset:
        frame, csv_path = frames[key]
        paths = [
            p if p.is_absolute() else csv_path.parent / p
            for p in (Path(s.strip()).expanduser() for s in frame[opts.path_column])
        ]
        return _files_dataset(paths, targets[key], opts)

    if "pool" in frames:
        train, val, test = train_val_test(files("pool"), opts)
    else:
        given = {s: files(s) if s in frames else None for s in SPLIT_ALIASES}
        train, val, test = _with_carved_splits(given, opts)
    if len(train) == 0:
        train_csv = frames["pool" if "pool" in frames else "train"][1]
        raise UserError(f"no usable training images listed in {train_csv}")
    return SourceSplits(train, val, test, class_names)
