"""Data sources: one function per source, each returning raw train/val/test datasets.

A source only finds and splits the data; transforms are added by the datamodule. Every
split a source makes itself is seeded and stratified (see ``splits.stratified_split``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from autotimm.data.datasets import (
    ArrayImageDataset,
    FileImageDataset,
    SubsetDataset,
    SyntheticDataset,
    targets_of,
)
from autotimm.data.files import IMAGE_EXTENSIONS, check_images, class_folders, scan_class_folders
from autotimm.data.idx import find_idx_file, read_idx
from autotimm.data.splits import stratified_split

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# root used by sources that download when none is given (relative to the working dir)
DEFAULT_DOWNLOAD_ROOT = "data"
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


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


def _carve(base: Dataset, fractions: Sequence[float], seed: int) -> tuple[SubsetDataset, ...]:
    """Seeded stratified parts of ``base``: one per fraction, then the remainder."""
    return tuple(
        SubsetDataset(base, idx) for idx in stratified_split(targets_of(base), fractions, seed)
    )


def _train_val_test(base: Dataset, opts: SourceOptions) -> tuple[Dataset, Dataset, Dataset]:
    """Split one pool into train/val/test by ``val_fraction`` and ``test_fraction``."""
    test, val, train = _carve(base, [opts.test_fraction, opts.val_fraction], opts.seed)
    return train, val, test


def _require_dir(root: str | None, source: str) -> Path:
    """``root`` as an existing directory, or an error that names the path."""
    if not root:
        raise ValueError(f"source {source!r} needs data.root (a folder), got none")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data root {path} for source {source!r} does not exist")
    return path


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (1797, 8, 8) float images (0..16) and int labels.

    Read straight from the CSV inside the scikit-learn wheel, as ``load_digits`` does, but
    without importing sklearn (about a second of start-up); sklearn's loader otherwise.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path) as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return digits.images, digits.target


def load_digits(opts: SourceOptions) -> SourceSplits:
    """sklearn's 1,797 real 8x8 handwritten digits (bundled, no download), 0..16 -> 0..255."""
    raw_images, targets = digits_arrays()
    images = np.clip(np.round(raw_images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    train, val, test = _train_val_test(ArrayImageDataset(images, targets), opts)
    return SourceSplits(train, val, test, [str(d) for d in range(10)], native_size=8)


def _download_torchvision(name: str, root: Path) -> None:
    """Fetch a torchvision dataset (both splits) into ``root``."""
    from torchvision import datasets  # lazy: torchvision.datasets is slow to import

    cls = getattr(datasets, name)
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_fashion_mnist(opts: SourceOptions) -> SourceSplits:
    """Fashion-MNIST from IDX files (Debian package layout or torchvision's ``FashionMNIST/raw``).

    Validation is carved from the 60k training images; test is the official 10k.
    """
    root = Path(opts.root or (DEFAULT_DOWNLOAD_ROOT if opts.download else FASHION_MNIST_ROOT))
    if opts.download:
        _download_torchvision("FashionMNIST", root)
    folders = [root, root / "FashionMNIST" / "raw", root / "raw"]
    stems = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }
    found = {key: find_idx_file(folders, stem) for key, stem in stems.items()}
    missing = [stems[key] for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} (optionally .gz) not found in {root} or "
            f"{root / 'FashionMNIST' / 'raw'}. Install them with `apt-get install "
            "dataset-fashion-mnist` (default root), or set data.download=true."
        )
    arrays = {key: read_idx(path) for key, path in found.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files disagree: "
                f"images {images.shape}, labels {labels.shape}"
            )
    pool = ArrayImageDataset(arrays["train_x"], arrays["train_y"])
    val, train = _carve(pool, [opts.val_fraction], opts.seed)
    test = ArrayImageDataset(arrays["test_x"], arrays["test_y"])
    return SourceSplits(train, val, test, list(FASHION_MNIST_CLASSES), native_size=28)


def _load_cifar(opts: SourceOptions, name: str) -> SourceSplits:
    """torchvision CIFAR-10/100 from ``root``; validation carved from the training set."""
    from torchvision import datasets  # lazy: torchvision.datasets is slow to import

    root = Path(opts.root or DEFAULT_DOWNLOAD_ROOT).expanduser()
    cls = getattr(datasets, name)
    try:
        pool = cls(str(root), train=True, download=opts.download)
        test = cls(str(root), train=False, download=opts.download)
    except RuntimeError as exc:
        if opts.download:
            raise
        raise FileNotFoundError(
            f"{name} not found under {root} (torchvision: {exc}). "
            f"Point data.root at the folder that holds it, or set data.download=true."
        ) from exc
    val, train = _carve(pool, [opts.val_fraction], opts.seed)
    return SourceSplits(train, val, test, list(pool.classes), native_size=32)


def load_cifar10(opts: SourceOptions) -> SourceSplits:
    """CIFAR-10 (torchvision layout under ``root``)."""
    return _load_cifar(opts, "CIFAR10")


def load_cifar100(opts: SourceOptions) -> SourceSplits:
    """CIFAR-100 (torchvision layout under ``root``)."""
    return _load_cifar(opts, "CIFAR100")


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
        carved_test, carved_val, train = _carve(train, fractions, opts.seed)
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
        raise ValueError(
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
        raise ValueError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {where}"
        )
    if split_dirs["train"] is None:
        pool = _files_dataset(*scanned["train"], opts)
        train, val, test = _train_val_test(pool, opts)
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
    for column in (opts.path_column, opts.label_column):
        if column not in frame.columns:
            raise ValueError(
                f"{path} has no column {column!r} (columns: {list(frame.columns)}); "
                "set data.path_column / data.label_column"
            )
    blank = (frame[opts.path_column].str.strip() == "") | (
        frame[opts.label_column].str.strip() == ""
    )
    if blank.any():
        raise ValueError(
            f"{path}: empty path or label in data row(s) {list(frame.index[blank] + 1)[:10]}"
        )
    return frame


def _csv_split_of(value: str, path: Path) -> str:
    """Normalise a split-column value (``valid``/``validation`` -> ``val``)."""
    value = value.strip().lower()
    for split, aliases in SPLIT_ALIASES.items():
        if value in aliases:
            return split
    raise ValueError(
        f"{path}: unknown split {value!r} (accepted: train, val/valid/validation, test)"
    )


def load_csv(opts: SourceOptions) -> SourceSplits:
    """Image paths and labels from CSV.

    Layouts, checked in this order:
    - ``csv_file`` set (absolute, or relative to ``root`` when given): one CSV. With a
      ``split_column`` (default ``split``: train / val / test) rows go to those splits;
      without it the rows are split here by ``val_fraction``/``test_fraction``.
    - otherwise ``root/train.csv`` (required), ``root/val.csv``, ``root/test.csv``.
    A split that is not given is carved from train. Relative image paths are resolved
    against the folder of the CSV that lists them. One label mapping covers all splits.
    """
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
                raise ValueError(f"{csv_path}: no rows with {opts.split_column}=train")
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

    class_names, to_index = label_mapping(
        v for frame, _ in frames.values() for v in frame[opts.label_column]
    )

    def files(frame, csv_path: Path) -> FileImageDataset:
        paths = [
            p if p.is_absolute() else csv_path.parent / p
            for p in (Path(s.strip()).expanduser() for s in frame[opts.path_column])
        ]
        labels = [to_index[str(v).strip()] for v in frame[opts.label_column]]
        return _files_dataset(paths, labels, opts)

    if "pool" in frames:
        train, val, test = _train_val_test(files(*frames["pool"]), opts)
    else:
        given = {s: files(*frames[s]) if s in frames else None for s in SPLIT_ALIASES}
        train, val, test = _with_carved_splits(given, opts)
    if len(train) == 0:
        train_csv = frames["pool" if "pool" in frames else "train"][1]
        raise ValueError(f"no usable training images listed in {train_csv}")
    return SourceSplits(train, val, test, class_names)


def load_synthetic(opts: SourceOptions) -> SourceSplits:
    """``synthetic_size`` seeded random tensors at the model input size (benchmarks, smoke)."""
    num_classes = opts.num_classes or 10
    pool = SyntheticDataset(opts.synthetic_size, num_classes, opts.input_size, opts.seed)
    train, val, test = _train_val_test(pool, opts)
    return SourceSplits(
        train, val, test, [f"class_{i}" for i in range(num_classes)], is_tensor=True
    )


SOURCES: dict[str, Callable[[SourceOptions], SourceSplits]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "synthetic": load_synthetic,
}
# sources torchvision can download (what prepare_data fetches when download=True)
DOWNLOADABLE = {"fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def list_sources() -> list[str]:
    """Names accepted as ``data.source``."""
    return sorted(SOURCES)


def get_source(name: str) -> Callable[[SourceOptions], SourceSplits]:
    """The loader for ``name``; unknown names raise a ValueError listing the accepted ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(
            f"unknown data source {name!r}; accepted sources: {', '.join(list_sources())}"
        ) from None


def download_source(name: str, root: str | None) -> None:
    """Download a torchvision-backed source into ``root`` (no-op for the other sources)."""
    if name in DOWNLOADABLE:
        _download_torchvision(DOWNLOADABLE[name], Path(root or DEFAULT_DOWNLOAD_ROOT))
