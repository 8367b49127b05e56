"""``ImageDataModule``: one LightningDataModule over every data source, with timm transforms.

Its arguments are checked in ``autotimm.data.arguments``; what a loaded source becomes
(datasets, collates, device transforms) is ``autotimm.data.loaded``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from autotimm.data.arguments import (
    check_arguments,
    decodes_on_device,
    default_num_workers,
    from_fields,
)
from autotimm.data.datasets import (
    EncodedBatch,
    SubsetDataset,
    TransformedDataset,
    collate_encoded,
    targets_of,
)
from autotimm.data.folds import fold_splits
from autotimm.data.imbalance import loader_order
from autotimm.data.loaded import LoadedData, load_splits
from autotimm.data.sources import SourceOptions, download_source, get_source
from autotimm.data.splits import limit_indices
from autotimm.data.transforms import AugmentConfig, resolve_data_config
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)


class ImageDataModule(L.LightningDataModule):
    """Train/val/test/predict loaders for one data source (see ``list_sources()``).

    Every argument is a plain type so Hydra can build it (``_target_:
    autotimm.data.ImageDataModule``). The data is loaded lazily on first use of
    ``num_classes``/``class_names``/``data_config`` or in ``setup``, once.

    Source-specific arguments: ``root`` (all but digits/synthetic), ``download``
    (fashion_mnist, cifar10, cifar100), ``csv_file``/``path_column``/``label_column``/
    ``split_column`` (csv), ``synthetic_size``/``num_classes`` (synthetic),
    ``skip_corrupt``/``verify_images`` (image_folder, csv). ``limit`` caps every split
    (a seeded stratified sample). ``val_fraction``/``test_fraction`` apply to splits the
    source does not provide itself. Augmentation arguments go to timm's
    ``create_transform`` for the training split only; val/test/predict use eval transforms.

    ``decode`` picks where image files are decoded and augmented: ``cpu`` (PIL + timm
    transforms in the loader workers), ``gpu`` (workers only read the file bytes; decoding,
    augmentation and normalisation run batched on the training device after the transfer,
    see ``autotimm.data.gpu_transforms``; on a CPU device this runs on the CPU), or
    ``auto`` (``gpu`` for image_folder/csv when CUDA is present and no ``auto_augment`` is
    asked for, else ``cpu``). ``channels_last`` converts image batches on CUDA devices.
    ``sampler='balanced'`` draws training images class-balanced; ``class_weights``
    (``'auto'`` or a list) is read by the run for the loss (``autotimm.data.imbalance``).
    ``multi_label`` (csv): several labels per image, in ``label_column`` separated by
    ``label_delimiter`` or as 0/1 ``label_columns``; targets are float multi-hot rows and
    ``class_names`` the labels (``autotimm.data.multilabel``).
    ``folds``/``fold``: k-fold cross-validation, fold ``fold`` of the pool (train + val)
    validates, the others train; test stays held out (``autotimm.data.folds``).
    """

    def __init__(
        self,
        source: str = "digits",
        root: str | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int | None = None,
        backbone: str | None = None,
        in_chans: int = 3,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 42,
        download: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        drop_last: bool = True,
        skip_corrupt: bool = False,
        verify_images: bool = True,
        limit: int | None = None,
        num_classes: int | None = None,
        synthetic_size: int = 512,
        csv_file: str | None = None,
        path_column: str = "path",
        label_column: str = "label",
        split_column: str = "split",
        multi_label: bool = False,
        label_delimiter: str = " ",
        label_columns: list[str] | None = None,
        hflip: float = 0.5,
        vflip: float = 0.0,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        color_jitter: float | None = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        no_aug: bool = False,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        decode: str = "auto",
        channels_last: bool = True,
        sampler: str | None = None,
        class_weights: str | list[float] | None = None,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__()
        # logger=False: the run logs the full config; merging both would clash on num_classes
        self.save_hyperparameters(logger=False)
        check_arguments(self.hparams)  # a value that cannot work fails before data loads
        self.source = source
        self.multi_label = multi_label
        self.decode = decode
        self.channels_last = channels_last
        self.decode_on_device = decodes_on_device(decode, source, auto_augment)
        self.augment: AugmentConfig = from_fields(AugmentConfig, self.hparams)
        self._set_loader_options(batch_size, num_workers, pin_memory, persistent_workers, drop_last)
        self._loaded: LoadedData | None = None  # built on first use of the data, once

    def _set_loader_options(
        self,
        batch_size: int,
        num_workers: int | None,
        pin_memory: bool | None,
        persistent_workers: bool,
        drop_last: bool,
    ) -> None:
        """The loaders' settings, defaults resolved (``batch_size`` is also the one
        Lightning's batch-size finder sets)."""
        self.batch_size = batch_size
        self.num_workers = default_num_workers(self.source) if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        # workers that live across epochs only exist when there are workers
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.drop_last = drop_last

    # ----------------------------------------------------------------- loading
    def _resolve_config(self, native_size: int | None = None) -> dict[str, Any]:
        hp = self.hparams
        return resolve_data_config(
            hp.backbone,
            image_size=hp.image_size,
            in_chans=hp.in_chans,
            interpolation=hp.interpolation,
            crop_pct=hp.crop_pct,
            native_size=native_size,
        )

    def _load(self) -> LoadedData:
        """Load and split the source, check num_classes, build the split datasets (once)."""
        if self._loaded is not None:
            return self._loaded
        hp = self.hparams
        input_size = self._resolve_config()["input_size"]
        options = from_fields(SourceOptions, hp, input_size=input_size)
        splits = get_source(self.source)(options)
        found = len(splits.class_names)
        if hp.num_classes is not None and hp.num_classes != found:
            raise UserError(
                f"num_classes={hp.num_classes} was given but source {self.source!r} has "
                f"{found} classes; set data.num_classes={found} or leave it unset"
            )
        if hp.folds is not None:  # k-fold: train/val from the pool, limit caps the pool
            splits = fold_splits(splits, hp.folds, hp.fold, hp.seed, hp.limit)
        if hp.limit is not None:
            splits.train, splits.val, splits.test = (
                SubsetDataset(ds, limit_indices(targets_of(ds), hp.limit, hp.seed))
                for ds in (splits.train, splits.val, splits.test)
            )
        # the native image size is known only now; it picks the eval crop for tiny images
        data_config = self._resolve_config(splits.native_size)
        loaded = load_splits(
            splits,
            data_config,
            self.augment,
            hp.in_chans,
            self.decode_on_device,
            self.channels_last,
        )
        if self.decode_on_device:
            log.info("data %s: decoding and augmenting on the device", self.source)
        self._loaded = loaded
        log.info(
            "data %s: %d train / %d val / %d test images, %d classes, input %s",
            self.source, len(splits.train), len(splits.val), len(splits.test), found,
            data_config["input_size"],
        )  # fmt: skip
        return loaded

    def prepare_data(self) -> None:
        """Download once per node (Lightning calls this on one process) when asked to."""
        if self.hparams.download:
            download_source(self.source, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        """Build all splits; repeated calls (fit, then test) reuse them."""
        self._load()

    # -------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        """Number of classes in the data (checked against a given ``num_classes``)."""
        return len(self._load().splits.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (sorted folder names / labels), for checkpoints."""
        return list(self._load().splits.class_names)

    @property
    def data_config(self) -> dict[str, Any]:
        """Resolved input_size (C, H, W), mean, std, interpolation, crop_pct."""
        return dict(self._load().data_config)

    @property
    def train_dataset(self) -> TransformedDataset:
        """Training split with the training (augmenting) transform."""
        return self._load().datasets["train"]

    @property
    def val_dataset(self) -> TransformedDataset:
        """Validation split with the eval transform."""
        return self._load().datasets["val"]

    @property
    def test_dataset(self) -> TransformedDataset:
        """Test split (also used for predict) with the eval transform."""
        return self._load().datasets["test"]

    # ------------------------------------------------------------- dataloaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        loaded, encoded = self._load(), self.decode_on_device
        dataset: Dataset = loaded.encoded[split] if encoded else loaded.loader_datasets[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            **loader_order(self.hparams.sampler, dataset, train),  # shuffle or balanced
            # dropping the only (partial) batch of a small train split would leave nothing
            drop_last=train and self.drop_last and len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            # encoded bytes stay on the host (nvjpeg reads host memory): nothing to pin
            pin_memory=self.pin_memory and not encoded,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_encoded if encoded else loaded.collates.get(train),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        """Predictions run over the test split."""
        return self._loader("test", train=False)

    # ------------------------------------------------------- device-side batches
    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Encoded batches keep their bytes on the host (the decoder reads them from there)."""
        if isinstance(batch, EncodedBatch):
            return batch._replace(labels=batch.labels.to(device, non_blocking=True))
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode + augment encoded batches on their device; channels_last on CUDA."""
        if isinstance(batch, EncodedBatch):
            trainer = self.trainer
            return self.device_batch(batch, train=trainer is not None and trainer.training)
        if (
            self.channels_last
            and isinstance(batch, (list, tuple))
            and batch
            and isinstance(batch[0], torch.Tensor)
            and batch[0].ndim == 4
            and batch[0].is_cuda
        ):
            images = batch[0].contiguous(memory_format=torch.channels_last)
            return [images, *batch[1:]] if isinstance(batch, list) else (images, *batch[1:])
        return batch

    def device_batch(self, batch: EncodedBatch, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` from an encoded batch, decoded where its labels are.

        ``train`` picks the training augmentation, else the eval resize + centre crop.
        """
        transform = self._load().device_transforms[bool(train)]
        images = transform(batch.images(), batch.labels.device, batch.paths)
        return images, batch.labels

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Class names and data config go into Lightning checkpoints."""
        return {"class_names": self.class_names, "data_config": self.data_config}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to resume on data whose classes differ from the checkpoint's."""
        saved = state_dict.get("class_names")
        if saved is not None and list(saved) != self.class_names:
            raise UserError(
                f"checkpoint was trained on classes {saved} but the data has {self.class_names}"
            )
