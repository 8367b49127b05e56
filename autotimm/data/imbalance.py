"""Class imbalance: `data.class_weights=auto` (loss weights) and `data.sampler=balanced`.

- class_weights=auto: inverse-frequency weights `n / (k * count_c)` of the training split
  (1.0 for every class when balanced), printed and passed to the cross-entropy loss.
- sampler=balanced: torch's WeightedRandomSampler draws each training image with
  probability 1 / count of its class, so every class is seen about equally often (one
  epoch = as many draws as training images, with replacement).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from autotimm.checks import ConfigValueError, check_choice

log = logging.getLogger(__name__)

SAMPLERS = (None, "balanced")
CLASS_WEIGHTS = (None, "auto")


def check_imbalance_options(class_weights: Any, sampler: Any) -> None:
    """`data.class_weights`: null, auto or one positive number per class; `data.sampler`."""
    check_choice("sampler", sampler, SAMPLERS)
    if class_weights is None or isinstance(class_weights, str) and class_weights == "auto":
        return
    if isinstance(class_weights, (list, tuple)) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in class_weights
    ):
        return
    raise ConfigValueError(
        "class_weights", class_weights, "accepted: null, auto or a list of positive numbers"
    )


def class_counts(targets: Any, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)


def inverse_frequency_weights(targets: Any, num_classes: int) -> list[float]:
    """`n / (k * count_c)` per class; a class absent from training gets weight 0."""
    counts = class_counts(targets, num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return [round(float(w), 6) for w in weights]


def loss_class_weights(class_weights: Any, datamodule: Any) -> list[float] | None:
    """The loss weights a run uses (None: unweighted); `auto` is computed and printed."""
    if class_weights is None:
        return None
    if class_weights != "auto":
        weights = [float(w) for w in class_weights]
        if len(weights) != datamodule.num_classes:
            raise ConfigValueError(
                "data.class_weights",
                class_weights,
                f"has {len(weights)} entries, the data has {datamodule.num_classes} classes",
            )
        return weights
    from autotimm.data.datasets import targets_of

    weights = inverse_frequency_weights(
        targets_of(datamodule.train_dataset), datamodule.num_classes
    )
    names = datamodule.class_names or [str(i) for i in range(len(weights))]
    shown = ", ".join(f"{n}: {w:.3g}" for n, w in zip(names, weights, strict=True))
    log.info("class weights (inverse frequency of the training split): %s", shown)
    print(f"class weights: {shown}")
    return weights


def loader_order(sampler: str | None, dataset: Any, train: bool) -> dict[str, Any]:
    """DataLoader keywords for the order of a split: shuffled, balanced or as stored."""
    if not train or sampler is None:
        return {"shuffle": train}
    from torch.utils.data import WeightedRandomSampler

    from autotimm.data.datasets import targets_of

    targets = targets_of(dataset)
    counts = class_counts(targets, int(targets.max()) + 1)
    per_image = 1.0 / counts[targets]
    return {"sampler": WeightedRandomSampler(per_image.tolist(), len(targets), replacement=True)}
