"""Mixup/CutMix and label smoothing glue around timm's `Mixup`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autotimm.checks import check_fraction, check_non_negative


def validate_regularization(
    label_smoothing: float, mixup_alpha: float, cutmix_alpha: float, head_dropout: float
) -> None:
    """ImageClassifier's regularization arguments (the regularization group's fields)."""
    check_fraction("label_smoothing", label_smoothing)
    check_non_negative("mixup_alpha", mixup_alpha, " (0 disables mixup)")
    check_non_negative("cutmix_alpha", cutmix_alpha, " (0 disables cutmix)")
    check_fraction("head_dropout", head_dropout)


class BatchMixer:
    """Mixes a training batch and returns soft targets (label smoothing folded in).

    timm's Mixup needs an even batch; an odd batch (the last one without
    drop_last) is left unmixed, with smoothed one-hot targets.
    """

    def __init__(
        self, num_classes: int, mixup_alpha: float, cutmix_alpha: float, label_smoothing: float
    ) -> None:
        from timm.data import Mixup

        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] % 2 == 0:
            # timm mixes in place: work on a copy so the caller's batch stays intact
            return self.mixup(images.clone(), target)
        return images, smooth_one_hot(target, self.num_classes, self.label_smoothing)


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with the same smoothing convention as CrossEntropyLoss."""
    off = smoothing / num_classes
    return F.one_hot(target, num_classes).float() * (1.0 - smoothing) + off
