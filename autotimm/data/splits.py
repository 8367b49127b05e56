"""Seeded, stratified index splits (numpy only, so no sklearn import is needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autotimm.user_errors import UserError


def _count(n: int, fraction: float) -> int:
    """Items a fraction asks for; at least one when the fraction is positive and n allows it."""
    if fraction <= 0:
        return 0
    # half rounds up (round() would send 4.5 to 4)
    return max(1, int(n * fraction + 0.5)) if n >= 2 else 0


def strata(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """One stratum id per item, 0..strata-1 in the order of the labels: by label, or for
    multi-hot rows (multi-label targets, shape (n, labels)) by the row's label pattern."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise UserError(f"labels must be 1-D (classes) or 2-D (multi-hot), got {labels.shape}")
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Split indices 0..n-1 into ``len(fractions)`` seeded parts plus a remainder (last).

    Each class is shuffled, then all items are ordered by their relative rank inside their
    class, so any prefix of that order keeps the class proportions. Taking the parts as
    consecutive slices of it stratifies even when a part is smaller than the number of
    classes (where a per-class rounding would give empty splits). Returned indices are sorted.
    Multi-hot labels are stratified on their label patterns (``strata``).
    """
    labels = strata(labels)
    n = len(labels)
    if any(f < 0 for f in fractions) or sum(fractions) >= 1:
        raise UserError(f"split fractions must be >= 0 and sum to < 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    keys = np.empty(n, dtype=np.float64)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        ranks = rng.permutation(len(idx))
        # relative rank in (0, 1): class-balanced interleaving of all classes
        keys[idx] = (ranks + 0.5) / len(idx)
    # a random tie-break so equal ranks from different classes are not ordered by label
    order = np.lexsort((rng.random(n), keys))
    parts: list[np.ndarray] = []
    start = 0
    for fraction in fractions:
        size = min(_count(n, fraction), n - start - 1) if n - start > 1 else 0
        parts.append(np.sort(order[start : start + size]))
        start += size
    parts.append(np.sort(order[start:]))
    return parts


def limit_indices(labels: Sequence[int] | np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` items, a seeded class-stratified sample (all if None)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise UserError(f"limit must be a positive number of images per split, got {limit}")
    # the first part of a stratified split is exactly a stratified sample of that size
    return stratified_split(labels, [limit / n], seed)[0][:limit]
