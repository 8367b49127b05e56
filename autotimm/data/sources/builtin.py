"""The built-in data sources: bundled digits, Fashion-MNIST, CIFAR-10/100 and synthetic tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotimm.data.datasets import ArrayImageDataset, SyntheticDataset
from autotimm.data.idx import find_idx_file, read_idx
from autotimm.data.sources.base import (
    DEFAULT_DOWNLOAD_ROOT,
    SourceOptions,
    SourceSplits,
    carve,
    train_val_test,
)
from autotimm.user_errors import UserError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# sources torchvision can download (what prepare_data fetches when download=True)
DOWNLOADABLE = {"fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


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
    train, val, test = train_val_test(ArrayImageDataset(images, targets), opts)
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
            raise UserError(
                f"Fashion-MNIST {split} files disagree: "
                f"images {images.shape}, labels {labels.shape}"
            )
    pool = ArrayImageDataset(arrays["train_x"], arrays["train_y"])
    val, train = carve(pool, [opts.val_fraction], opts.seed)
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
    val, train = carve(pool, [opts.val_fraction], opts.seed)
    return SourceSplits(train, val, test, list(pool.classes), native_size=32)


def load_cifar10(opts: SourceOptions) -> SourceSplits:
    """CIFAR-10 (torchvision layout under ``root``)."""
    return _load_cifar(opts, "CIFAR10")


def load_cifar100(opts: SourceOptions) -> SourceSplits:
    """CIFAR-100 (torchvision layout under ``root``)."""
    return _load_cifar(opts, "CIFAR100")


def load_synthetic(opts: SourceOptions) -> SourceSplits:
    """``synthetic_size`` seeded random tensors at the model input size (benchmarks, smoke)."""
    num_classes = opts.num_classes or 10
    pool = SyntheticDataset(opts.synthetic_size, num_classes, opts.input_size, opts.seed)
    train, val, test = train_val_test(pool, opts)
    return SourceSplits(
        train, val, test, [f"class_{i}" for i in range(num_classes)], is_tensor=True
    )


def download_source(name: str, root: str | None) -> None:
    """Download a torchvision-backed source into ``root`` (no-op for the other sources)."""
    if name in DOWNLOADABLE:
        _download_torchvision(DOWNLOADABLE[name], Path(root or DEFAULT_DOWNLOAD_ROOT))
