"""Map-style datasets behind the sources: raw items (PIL image, label) plus a transform wrapper.

Sources return *raw* datasets without transforms; the datamodule wraps each split with its
own transform. So a validation split carved from the training data never shares the
training transform (augmentation) with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from autotimm.data.files import CorruptImageError, load_image
from autotimm.user_errors import UserError


def targets_of(dataset: Any) -> np.ndarray:
    """Integer labels of a dataset, from its ``targets`` attribute (ours and torchvision's),
    for stratified splits and class counts. Multi-label data (2-D multi-hot ``targets``)
    gives one stratum per image: its rarest label, -1 without labels (see ``multilabel``)."""
    targets = np.asarray(dataset.targets)
    if targets.ndim == 2:
        from autotimm.data.multilabel import rarest_label

        return rarest_label(targets)
    return targets.astype(np.int64)


def as_targets(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """int64 class indices (N,), or float32 multi-hot rows (N, labels) for multi-label data."""
    array = np.asarray(targets)
    return array.astype(np.float32) if array.ndim == 2 else array.astype(np.int64)


def target_item(targets: np.ndarray, index: int) -> int | torch.Tensor:
    """One item's target: its class index, or its multi-hot row as a float tensor."""
    if targets.ndim == 2:
        return torch.from_numpy(targets[index])
    return int(targets[index])


class ArrayImageDataset(Dataset):
    """uint8 images kept in memory, (N, H, W) grayscale or (N, H, W, 3) RGB.

    Pixels stay a compact array; a PIL image is made per item only because timm's
    transforms take PIL input.
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int] | np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise UserError(f"expected uint8 (N,H,W[,C]) images, got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise UserError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.targets[index])


class FileImageDataset(Dataset):
    """Images read from files on every access; a failed read names the file."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int] | np.ndarray) -> None:
        if len(paths) != len(targets):
            raise UserError(f"{len(paths)} paths but {len(targets)} labels")
        self.paths = list(paths)
        self.targets = as_targets(targets)  # class indices, or multi-hot rows

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | torch.Tensor]:
        return load_image(self.paths[index]), target_item(self.targets, index)


class SyntheticDataset(Dataset):
    """Random normal tensors of shape ``input_size`` with balanced random labels.

    Each item is drawn from its own generator seeded by (seed, index), so items are the
    same on every access, in every worker, without holding them all in memory.
    """

    def __init__(self, size: int, num_classes: int, input_size: Sequence[int], seed: int) -> None:
        if size < 1 or num_classes < 1:
            raise UserError(
                f"synthetic data needs size >= 1 and num_classes >= 1, "
                f"got size={size}, num_classes={num_classes}"
            )
        self.input_size = tuple(int(s) for s in input_size)
        self.seed = seed
        rng = np.random.default_rng(seed)
        # every class equally often (as far as size allows), in seeded order
        self.targets = rng.permutation(np.arange(size) % num_classes).astype(np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item_seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(item_seed)
        return torch.randn(self.input_size, generator=generator), int(self.targets[index])


class SubsetDataset(Dataset):
    """A view on some indices of a dataset that, unlike torch's Subset, keeps ``targets``."""

    def __init__(self, base: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = as_targets(base.targets)[self.indices]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[int(self.indices[index])]


class TransformedDataset(Dataset):
    """Apply one split's transform to a raw dataset's PIL images.

    ``mode`` ("RGB" or "L") converts every image first, so grayscale data feeds a
    3-channel backbone and RGB/RGBA/palette files all come out with the same channels.
    """

    def __init__(
        self, base: Dataset, transform: Callable[[Any], Any] | None, mode: str | None
    ) -> None:
        self.base = base
        self.transform = transform
        self.mode = mode
        self.targets = as_targets(base.targets)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        if isinstance(image, Image.Image) and self.mode and image.mode != self.mode:
            image = image.convert(self.mode)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def file_items(dataset: Any) -> tuple[list[Path], np.ndarray]:
    """The file paths and labels behind a split of file images (through subset views).

    Raises TypeError for datasets that are not (views on) a ``FileImageDataset``.
    """
    indices: np.ndarray | None = None
    base = dataset
    while isinstance(base, SubsetDataset):
        indices = base.indices if indices is None else base.indices[indices]
        base = base.base
    if not isinstance(base, FileImageDataset):
        raise TypeError(f"{type(base).__name__} holds no image files")
    chosen = np.arange(len(base.paths)) if indices is None else indices
    return [base.paths[int(i)] for i in chosen], base.targets[chosen]


class EncodedImageDataset(Dataset):
    """The encoded bytes of image files, undecoded: ``(uint8 tensor, label, path)``.

    For the device decode path (``data.decode=gpu``): loader workers only read files,
    decoding and augmentation happen on the device in batches (see ``gpu_transforms``).
    """

    def __init__(self, paths: Sequence[Path], targets: Sequence[int] | np.ndarray) -> None:
        if len(paths) != len(targets):
            raise UserError(f"{len(paths)} paths but {len(targets)} labels")
        self.paths = [str(p) for p in paths]
        self.targets = as_targets(targets)

    @classmethod
    def of(cls, dataset: Any) -> EncodedImageDataset:
        """The same files and labels as a (subset of a) ``FileImageDataset``."""
        return cls(*file_items(dataset))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor, str]:
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CorruptImageError(f"cannot read image {path}: {exc}") from exc
        if not data:
            raise CorruptImageError(f"cannot read image {path}: the file is empty")
        # frombuffer shares the bytes object's memory; bytearray keeps it writable
        image = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return image, target_item(self.targets, index), path


class EncodedBatch(NamedTuple):
    """A batch of encoded images: all bytes in one flat uint8 tensor, split by ``lengths``.

    One flat tensor (instead of one tensor per image) crosses from a loader worker to the
    main process through one shared-memory segment, not one per image.
    """

    data: torch.Tensor  # (total_bytes,) uint8
    labels: torch.Tensor  # (N,) int64, or (N, labels) float32 multi-hot
    lengths: torch.Tensor  # (N,) int64, bytes per image
    paths: list[str]

    def images(self) -> list[torch.Tensor]:
        """The encoded images as 1-d uint8 views on ``data``, one per image."""
        return list(torch.split(self.data, self.lengths.tolist()))


def collate_encoded(batch: Sequence[tuple[torch.Tensor, Any, str]]) -> EncodedBatch:
    """Pack the variable-length byte tensors of a batch into an ``EncodedBatch``."""
    data, labels, paths = zip(*batch, strict=True)
    multi_hot = isinstance(labels[0], torch.Tensor)
    return EncodedBatch(
        data=torch.cat(data),
        labels=torch.stack(labels) if multi_hot else torch.as_tensor(labels, dtype=torch.int64),
        lengths=torch.as_tensor([len(d) for d in data], dtype=torch.int64),
        paths=list(paths),
    )
