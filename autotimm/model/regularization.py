"""Regularization: `RegularizationConfig` (the regularization group, an ImageClassifier
argument), its checks, and the Mixup/CutMix and label smoothing glue around timm's `Mixup`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from autotimm.checks import ConfigValueError, check_choice, check_fraction, check_non_negative

# timm Mixup's modes: one lambda per batch, per pair of samples, per sample
MIXUP_MODES = ("batch", "pair", "elem")


def validate_regularization(
    label_smoothing: float, mixup_alpha: float, cutmix_alpha: float, head_dropout: float
) -> None:
    """ImageClassifier's regularization arguments (the regularization group's fields)."""
    check_fraction("label_smoothing", label_smoothing)
    check_non_negative("mixup_alpha", mixup_alpha, " (0 disables mixup)")
    check_non_negative("cutmix_alpha", cutmix_alpha, " (0 disables cutmix)")
    check_fraction("head_dropout", head_dropout)


def validate_mixup_schedule(
    prob: float, switch_prob: float, mode: str, off_epoch: int | None
) -> None:
    """timm Mixup's `prob`, `switch_prob`, `mode` and the epoch mixing stops at."""
    for key, value in (("mixup_prob", prob), ("mixup_switch_prob", switch_prob)):
        check_non_negative(key, value)
        if value > 1:
            raise ConfigValueError(key, value, "must be in [0, 1]")
    check_choice("mixup_mode", mode, MIXUP_MODES)
    if off_epoch is not None and (
        isinstance(off_epoch, bool) or not isinstance(off_epoch, int) or off_epoch < 0
    ):
        raise ConfigValueError(
            "mixup_off_epoch", off_epoch, "must be an integer >= 0 (null: mix every epoch)"
        )


@dataclass
class RegularizationConfig:
    """Label smoothing, mixup/cutmix (timm Mixup's prob, switch_prob, mode; the epoch it
    stops at), head dropout and stochastic depth, together; checked when built."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    head_dropout: float = 0.0
    drop_path_rate: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    mixup_off_epoch: int | None = None

    def __post_init__(self) -> None:
        validate_regularization(
            self.label_smoothing, self.mixup_alpha, self.cutmix_alpha, self.head_dropout
        )
        validate_mixup_schedule(
            self.mixup_prob, self.mixup_switch_prob, self.mixup_mode, self.mixup_off_epoch
        )
        check_fraction("drop_path_rate", self.drop_path_rate)

    def model_arguments(self) -> dict[str, Any]:
        """The fields ImageClassifier keeps in its hparams (drop_path_rate is the backbone's)."""
        return {k: v for k, v in asdict(self).items() if k != "drop_path_rate"}


class BatchMixer:
    """Mixes a training batch and returns soft targets (label smoothing folded in).

    timm's Mixup needs an even batch; an odd batch (the last one without
    drop_last) is left unmixed, with smoothed one-hot targets.

    `multi_label`: targets are float multi-hot rows, smoothed towards 0.5. timm's Mixup
    mixes the images and, given the indices 0..N-1 as targets, returns the mixing weights
    (row i: how much of each image is in mixed image i, for every mode and CutMix's
    corrected lambda); the multi-hot targets are mixed with those same weights.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float,
        cutmix_alpha: float,
        label_smoothing: float,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        multi_label: bool = False,
    ) -> None:
        from timm.data import Mixup

        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.multi_label = multi_label
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            # multi-label: unsmoothed weights from timm, the smoothing goes on the targets
            label_smoothing=0.0 if multi_label else label_smoothing,
            num_classes=num_classes,
        )

    @classmethod
    def from_hparams(cls, hp: Any) -> BatchMixer | None:
        """The mixer of ImageClassifier's hparams; None when mixup and cutmix are off."""
        if not (hp.mixup_alpha > 0 or hp.cutmix_alpha > 0):
            return None
        prob, switch = hp.get("mixup_prob", 1.0), hp.get("mixup_switch_prob", 0.5)
        mode, multi_label = hp.get("mixup_mode", "batch"), bool(hp.get("multi_label", False))
        args = (hp.num_classes, hp.mixup_alpha, hp.cutmix_alpha, hp.label_smoothing)
        return cls(*args, prob=prob, switch_prob=switch, mode=mode, multi_label=multi_label)

    @property
    def enabled(self) -> bool:
        return bool(self.mixup.mixup_enabled)

    @enabled.setter
    def enabled(self, on: bool) -> None:
        # off: timm's Mixup returns the images as they are and (smoothed) one-hot targets
        self.mixup.mixup_enabled = on

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.multi_label:
            return self._mix_multi_hot(images, target)
        if images.shape[0] % 2 == 0:
            # timm mixes in place: work on a copy so the caller's batch stays intact
            return self.mixup(images.clone(), target)
        return images, smooth_one_hot(target, self.num_classes, self.label_smoothing)

    def _mix_multi_hot(
        self, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from autotimm.model.multilabel import smooth_multi_hot

        soft = smooth_multi_hot(target, self.label_smoothing)
        size = images.shape[0]
        if size % 2:
            return images, soft
        self.mixup.num_classes = size  # one "class" per image: the targets become weights
        index = torch.arange(size, device=target.device)
        mixed, weights = self.mixup(images.clone(), index)
        return mixed, weights.to(soft.dtype) @ soft


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with the same smoothing convention as CrossEntropyLoss."""
    off = smoothing / num_classes
    return F.one_hot(target, num_classes).float() * (1.0 - smoothing) + off


class MixupOff(L.Callback):
    """Plain targets from epoch `epoch` on (timm train.py's `--mixup-off-epoch`)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mixer = getattr(pl_module, "mixer", None)
        if mixer is not None:
            mixer.enabled = trainer.current_epoch < self.epoch
