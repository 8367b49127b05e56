"""What a loaded source becomes in the datamodule: per split the dataset with its transform,
the images the loaders read with their collates and, on the device decode path, the
encoded files with the device transforms. Built once (``ImageDataModule._load``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autotimm.data.datasets import EncodedImageDataset, TransformedDataset
from autotimm.data.sources import SourceSplits
from autotimm.data.transforms import AugmentConfig, NormalizingCollate, build_transform


@dataclass
class LoadedData:
    """One source's splits, ready to serve.

    ``datasets`` give normalised float images (the datamodule's ``*_dataset`` properties);
    ``loader_datasets`` the same images as uint8, which ``collates`` (by ``train``)
    normalise a batch at once (timm's loader layout, see autotimm.data.transforms): the same
    batches up to float rounding. Ready tensors need neither: both are the same datasets.
    """

    splits: SourceSplits
    data_config: dict[str, Any]  # resolved with the source's native image size
    datasets: dict[str, TransformedDataset]
    loader_datasets: dict[str, TransformedDataset]
    collates: dict[bool, NormalizingCollate] = field(default_factory=dict)
    encoded: dict[str, EncodedImageDataset] = field(default_factory=dict)
    device_transforms: dict[bool, Any] = field(default_factory=dict)  # by train


def load_splits(
    splits: SourceSplits,
    data_config: dict[str, Any],
    augment: AugmentConfig,
    in_chans: int,
    decode_on_device: bool,
    channels_last: bool,
) -> LoadedData:
    """Wrap each split with its own transform: train augments, val/test never do."""
    mode = "L" if in_chans == 1 else "RGB"
    split_of = {"train": splits.train, "val": splits.val, "test": splits.test}
    if splits.is_tensor:  # ready tensors at the input size: nothing to transform
        datasets = {s: TransformedDataset(ds, None, mode) for s, ds in split_of.items()}
        loaded = LoadedData(splits, data_config, datasets, datasets)
    else:
        transforms = {
            uint8: {
                "train": build_transform(data_config, True, augment, uint8=uint8),
                "eval": build_transform(data_config, False, uint8=uint8),
            }
            for uint8 in (False, True)
        }
        datasets, loader_datasets = (
            {
                split: TransformedDataset(
                    ds, transforms[uint8]["train" if split == "train" else "eval"], mode
                )
                for split, ds in split_of.items()
            }
            for uint8 in (False, True)
        )
        re_prob = 0.0 if augment.no_aug else augment.re_prob
        collates = {
            True: NormalizingCollate(data_config["mean"], data_config["std"], re_prob),
            False: NormalizingCollate(data_config["mean"], data_config["std"]),
        }
        loaded = LoadedData(splits, data_config, datasets, loader_datasets, collates)
    if decode_on_device:
        _decode_on_device(loaded, augment, channels_last)
    return loaded


def _decode_on_device(loaded: LoadedData, augment: AugmentConfig, channels_last: bool) -> None:
    """The encoded files the loaders read instead, and the transforms that decode them."""
    from autotimm.data.gpu_transforms import DeviceTransform

    splits = loaded.splits
    loaded.encoded = {
        "train": EncodedImageDataset.of(splits.train),
        "val": EncodedImageDataset.of(splits.val),
        "test": EncodedImageDataset.of(splits.test),
    }
    # channels_last on CUDA devices (None), like the CPU path's batches
    layout = None if channels_last else False
    loaded.device_transforms = {
        True: DeviceTransform.from_config(loaded.data_config, True, augment, channels_last=layout),
        False: DeviceTransform.from_config(loaded.data_config, False, channels_last=layout),
    }
