"""The datamodule's flat arguments before any data loads: the checks that refuse values
that cannot work (naming the value at fault), and what follows from the values (loader
workers, where images are decoded, the grouped option dataclasses).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

from autotimm.data.folds import check_fold_options
from autotimm.data.imbalance import check_imbalance_options
from autotimm.data.multilabel import check_multi_label_options
from autotimm.data.sources import get_source
from autotimm.user_errors import UserError

# Sources whose items are cheap in-memory arrays: worker processes cost more than they save
IN_MEMORY_SOURCES = frozenset({"digits", "synthetic"})
# Sources of image files: the ones the device decode path (data.decode=gpu) reads
FILE_SOURCES = frozenset({"image_folder", "csv"})
DECODE_MODES = ("auto", "cpu", "gpu")
T = TypeVar("T")


def default_num_workers(source: str) -> int:
    """Loader workers when ``num_workers`` is None.

    0 for cheap in-memory sources and for machines with <= 2 cores: there loading a
    64-image batch takes ~20 ms against ~170 ms for a resnet18 CPU step, so worker
    processes mostly compete with the model for the cores. Else cores - 1, at most 8.
    """
    cpus = os.cpu_count() or 1
    if source in IN_MEMORY_SOURCES or cpus <= 2:
        return 0
    return min(8, cpus - 1)


def check_arguments(hp: Mapping[str, Any]) -> None:
    """Fail at construction on arguments that cannot work, naming the value at fault.

    ``hp``: the datamodule's arguments by name (its ``hparams``).
    """
    check_loading(hp["source"], hp["batch_size"], hp["in_chans"], hp["decode"], hp["auto_augment"])
    # class weights and sampler are read by the loader and by the model's loss
    check_imbalance_options(hp["class_weights"], hp["sampler"])
    # csv only; refuses class_weights/sampler with multi_label (autotimm.data.multilabel)
    check_multi_label_options(
        hp["source"],
        hp["multi_label"],
        hp["label_delimiter"],
        hp["label_columns"],
        hp["class_weights"],
        hp["sampler"],
    )
    check_fold_options(hp["folds"], hp["fold"])


def check_loading(
    source: str, batch_size: int, in_chans: int, decode: str, auto_augment: str | None
) -> None:
    """The source, batch and channels, and the decode path with its augmentation."""
    get_source(source)  # an unknown name raises, listing the accepted sources
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if in_chans < 1:
        raise UserError(f"in_chans must be >= 1, got {in_chans}")
    if in_chans not in (1, 3) and source != "synthetic":
        raise UserError(f"image sources give 1 or 3 channels; in_chans={in_chans}")
    if decode not in DECODE_MODES:
        raise UserError(f"decode={decode!r} is not one of {list(DECODE_MODES)}")
    if decode == "gpu" and source not in FILE_SOURCES:
        raise UserError(
            f"decode='gpu' decodes image files (sources {sorted(FILE_SOURCES)}); "
            f"source {source!r} has none: use decode='cpu' or 'auto'"
        )
    if decode == "gpu" and auto_augment:
        raise UserError(
            f"auto_augment={auto_augment!r} has no device implementation; "
            "use decode='cpu' with auto_augment (or drop auto_augment)"
        )


def decodes_on_device(decode: str, source: str, auto_augment: str | None) -> bool:
    """Whether image files are decoded and augmented on the training device (``decode``)."""
    if decode == "auto":
        return source in FILE_SOURCES and not auto_augment and torch.cuda.is_available()
    return decode == "gpu"


def from_fields(cls: type[T], values: Mapping[str, Any], **overrides: Any) -> T:
    """Dataclass ``cls`` from the entries of ``values`` named like its fields, then ``overrides``.

    The datamodule's arguments are flat (Hydra keys); this groups them without listing
    each field a second time.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{**{n: values[n] for n in names if n in values}, **overrides})
