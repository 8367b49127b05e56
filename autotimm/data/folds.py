"""k-fold cross-validation: ``data.folds`` seeded, stratified folds of the pool, ``data.fold``
the one held out for validation.

The pool is the source's train + val (a fixed ``val/`` folder or ``split=val`` rows are
pooled too); the test split is left as the source made it, so it is the same for every
fold. ``data.limit`` caps the pool (then the folds are made) and the test split.
``python train.py -m +sweeps=kfold data.folds=5`` runs every fold (sweeps/kfold.yaml).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from autotimm.checks import ConfigValueError
from autotimm.data.datasets import FileImageDataset, SubsetDataset, file_items, targets_of
from autotimm.data.sources.base import SourceSplits
from autotimm.data.splits import limit_indices, strata

log = logging.getLogger(__name__)


def check_fold_options(folds: int | None, fold: int | None) -> None:
    """Fail at construction on a fold setting that cannot work, naming the value."""
    every = "run every fold with `python train.py -m +sweeps=kfold data.folds={}`"
    if folds is None:
        if fold is not None:
            raise ConfigValueError(
                "data.fold",
                fold,
                "needs data.folds (the number of folds, >= 2); " + every.format(5),
            )
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigValueError(
            "data.folds", folds, "must be an integer >= 2 (null: no cross-validation)"
        )
    if fold is None:
        raise ConfigValueError(
            "data.folds", folds, f"needs data.fold, one of 0..{folds - 1}; " + every.format(folds)
        )
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigValueError(
            "data.fold", fold, f"outside 0..{folds - 1} (the folds of data.folds={folds})"
        )


def _smallest_class(labels: np.ndarray, class_names: Sequence[str]) -> tuple[str, int] | None:
    """The name and item count of the rarest class present (None: no class at all).

    Multi-hot rows count each label's positives; a negative stratum (a multi-label image
    without labels, ``targets_of``) is no class a fold must hold."""
    if labels.ndim == 2:
        ids = np.flatnonzero(labels.sum(axis=0))
        counts = labels.sum(axis=0)[ids]
    else:
        ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    if len(ids) == 0:
        return None
    rarest = int(np.argmin(counts))
    label = int(ids[rarest])
    return (class_names[label] if label < len(class_names) else str(label)), int(counts[rarest])


def fold_numbers(
    labels: Sequence[int] | np.ndarray,
    folds: int,
    seed: int,
    class_names: Sequence[str] = (),
    multi_hot: np.ndarray | None = None,
) -> np.ndarray:
    """The fold (0..folds-1) of every item: stratified, seeded, sizes within one item.

    As scikit-learn's StratifiedKFold: items sorted by class (each class in seeded random
    order) are dealt to the folds in turn, so every class is spread over the folds as
    evenly as its count allows. Multi-hot rows are dealt by label pattern. ``multi_hot``
    (multi-label data whose ``labels`` are strata): the check that every fold can hold each
    label counts each label's positive images, not the strata.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ConfigValueError("data.folds", folds, "the pool (train + val) has no images")
    counted = labels if multi_hot is None else np.asarray(multi_hot)
    name, count = _smallest_class(counted, class_names) or ("", folds)
    if count < folds:
        raise ConfigValueError(
            "data.folds",
            folds,
            f"more folds than the {count} image(s) of class {name!r} in the pool (train + "
            "val), and every fold's validation needs each class; accepted: "
            + (f"2..{count}" if count >= 2 else "none: that class needs 2 images or more"),
        )
    rng = np.random.default_rng(seed)
    groups = strata(labels)
    # class by class (in seeded order), each class's items in seeded order
    order = np.lexsort((rng.random(len(groups)), rng.permutation(len(groups))[groups]))
    numbers = np.empty(len(groups), dtype=np.int64)
    numbers[order] = np.arange(len(groups)) % folds
    return numbers


def pool_of(train: Dataset, val: Dataset) -> Dataset:
    """train + val as one dataset with ``targets`` (a view on their common base when they
    share one, one file list for image files, else a concatenation)."""
    if len(val) == 0:
        return train
    views = [_view(train), _view(val)]
    if views[0][0] is views[1][0]:
        return SubsetDataset(views[0][0], np.sort(np.concatenate([v[1] for v in views])))
    try:  # image files: one file list, so the device decode path still finds the paths
        (train_paths, train_targets), (val_paths, val_targets) = file_items(train), file_items(val)
    except TypeError:
        return _Concat([train, val])
    return FileImageDataset(train_paths + val_paths, np.concatenate([train_targets, val_targets]))


def _view(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """The dataset below a chain of subset views, and the indices into it."""
    indices = np.arange(len(dataset))  # type: ignore[arg-type]
    while isinstance(dataset, SubsetDataset):
        indices = dataset.indices[indices]
        dataset = dataset.base
    return dataset, indices


class _Concat(ConcatDataset):
    """torch's ConcatDataset with the ``targets`` every split here carries."""

    def __init__(self, parts: list[Dataset]) -> None:
        super().__init__(parts)
        # the parts' own targets: class indices, or multi-hot rows for multi-label data
        targets = [np.asarray(part.targets) for part in parts]  # type: ignore[attr-defined]
        self.targets = np.concatenate(targets)


def fold_splits(
    splits: SourceSplits, folds: int, fold: int, seed: int, limit: int | None = None
) -> SourceSplits:
    """``splits`` with train/val replaced by fold ``fold`` of ``folds`` of the pool."""
    pool = pool_of(splits.train, splits.val)
    if limit is not None:  # a seeded stratified sample of the pool, before it is folded
        pool = SubsetDataset(pool, limit_indices(targets_of(pool), limit, seed))
    targets = np.asarray(pool.targets)  # type: ignore[attr-defined]
    multi_hot = targets if targets.ndim == 2 else None  # multi-label: label positives count
    numbers = fold_numbers(targets_of(pool), folds, seed, splits.class_names, multi_hot)
    splits.train = SubsetDataset(pool, np.flatnonzero(numbers != fold))
    splits.val = SubsetDataset(pool, np.flatnonzero(numbers == fold))
    log.info(
        "k-fold: fold %d of %d (0..%d) validates on %d of the pool's %d images; test held out",
        fold, folds, folds - 1, len(splits.val), len(pool),
    )  # fmt: skip
    return splits
