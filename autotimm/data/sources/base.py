"""What every data source takes (``SourceOptions``) and gives (``SourceSplits``), and its splits.

Every split a source makes itself is seeded and stratified (see ``splits.stratified_split``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import Dataset

from autotimm.data.datasets import SubsetDataset, targets_of
from autotimm.data.splits import stratified_split

# root used by sources that download when none is given (relative to the working dir)
DEFAULT_DOWNLOAD_ROOT = "data"


@dataclass(frozen=True)
class SourceOptions:
    """Everything a source may need; each source reads only the fields it uses."""

    root: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    download: bool = False
    skip_corrupt: bool = False
    verify_images: bool = True
    csv_file: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    split_column: str = "split"
    # csv: several labels per image (a delimited label column, or one 0/1 column per label)
    multi_label: bool = False
    label_delimiter: str = " "
    label_columns: tuple[str, ...] | list[str] | None = None
    num_classes: int | None = None
    synthetic_size: int = 512
    # resolved model input (C, H, W): synthetic tensors are generated at this shape
    input_size: tuple[int, int, int] = (3, 224, 224)


@dataclass
class SourceSplits:
    """Raw (untransformed) split datasets and the class names, index = label.

    ``native_size`` is the side of the source's images when all share one (it picks the
    eval crop for tiny images); ``is_tensor`` marks sources whose items are ready tensors.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    native_size: int | None = None
    is_tensor: bool = False


def carve(base: Dataset, fractions: Sequence[float], seed: int) -> tuple[SubsetDataset, ...]:
    """Seeded stratified parts of ``base``: one per fraction, then the remainder."""
    return tuple(
        SubsetDataset(base, idx) for idx in stratified_split(targets_of(base), fractions, seed)
    )


def train_val_test(base: Dataset, opts: SourceOptions) -> tuple[Dataset, Dataset, Dataset]:
    """Split one pool into train/val/test by ``val_fraction`` and ``test_fraction``."""
    test, val, train = carve(base, [opts.test_fraction, opts.val_fraction], opts.seed)
    return train, val, test
