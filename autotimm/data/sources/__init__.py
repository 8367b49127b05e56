"""Data sources by name: each loader returns the raw train/val/test datasets of one source.

A source only finds and splits the data; transforms are added by the datamodule. The
loaders live in ``builtin`` (bundled and downloadable datasets) and ``user_files`` (the
user's class folders and CSV lists); what they take and give is in ``base``.
"""

from __future__ import annotations

from collections.abc import Callable

from autotimm.data.sources.base import SourceOptions, SourceSplits
from autotimm.data.sources.builtin import (
    digits_arrays,
    download_source,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_synthetic,
)
from autotimm.data.sources.user_files import label_mapping, load_csv, load_image_folder
from autotimm.user_errors import UserError

SOURCES: dict[str, Callable[[SourceOptions], SourceSplits]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "synthetic": load_synthetic,
}


def list_sources() -> list[str]:
    """Names accepted as ``data.source``."""
    return sorted(SOURCES)


def get_source(name: str) -> Callable[[SourceOptions], SourceSplits]:
    """The loader for ``name``; unknown names raise a ValueError listing the accepted ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(
            f"unknown data source {name!r}; accepted sources: {', '.join(list_sources())}"
        ) from None


__all__ = [
    "SOURCES",
    "SourceOptions",
    "SourceSplits",
    "digits_arrays",
    "download_source",
    "get_source",
    "label_mapping",
    "list_sources",
    "load_cifar10",
    "load_cifar100",
    "load_csv",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_synthetic",
]
