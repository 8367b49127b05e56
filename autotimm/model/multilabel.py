"""Multi-label classification in ImageClassifier (`multi_label=True`): checks, loss, outputs.

One sigmoid per label: BCE-with-logits on float multi-hot targets, label smoothing moves
each target towards 0.5 (`y * (1 - s) + s / 2`, timm's BinaryCrossEntropy convention for
dense targets), a label is predicted when its probability is above `label_threshold`
(one number, or one per label). Mixup/CutMix mix the multi-hot targets with the images'
own weights (see `regularization.BatchMixer`). The data side is `autotimm.data.multilabel`.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from autotimm.checks import ConfigValueError
from autotimm.user_errors import UserError


def check_multi_label_model(
    multi_label: Any, label_threshold: Any, num_classes: int, class_weights: Any
) -> None:
    """ImageClassifier's multi-label arguments (errors name the argument and the value)."""
    if not isinstance(multi_label, bool):
        raise ConfigValueError("multi_label", multi_label, "must be true or false")
    values = label_threshold if isinstance(label_threshold, (list, tuple)) else [label_threshold]
    if not all(isinstance(v, Real) and not isinstance(v, bool) and 0 < v < 1 for v in values):
        raise ConfigValueError(
            "label_threshold",
            label_threshold,
            "must be a probability in (0, 1), or a list of them (one per label)",
        )
    if isinstance(label_threshold, (list, tuple)) and len(values) != num_classes:
        raise ConfigValueError(
            "label_threshold",
            label_threshold,
            f"has {len(values)} entries, the model has {num_classes} labels",
        )
    if not multi_label and label_threshold != 0.5:  # 0.5: the default, unused
        raise ConfigValueError(
            "label_threshold",
            label_threshold,
            "is for multi-label models only (single-label predictions take the top class); "
            "accepted: multi_label=True (data.multi_label=true), or leave it at 0.5",
        )
    if multi_label and class_weights is not None:
        raise ConfigValueError(
            "class_weights",
            class_weights,
            "weighs single-label cross-entropy; multi-label training takes none",
        )


def smooth_multi_hot(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-hot targets moved towards 0.5 by `smoothing` (1 -> 1 - s/2, 0 -> s/2)."""
    target = target.float()
    return target * (1.0 - smoothing) + 0.5 * smoothing if smoothing else target


class MultiLabelLoss(nn.Module):
    """BCE-with-logits averaged over images and labels, with label smoothing."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != logits.shape:
            raise UserError(
                f"multi-label targets must be multi-hot {tuple(logits.shape)}, got "
                f"{tuple(target.shape)}: is the data multi-label (data.multi_label=true)?"
            )
        return F.binary_cross_entropy_with_logits(
            logits, smooth_multi_hot(target, self.smoothing).to(logits.dtype)
        )


def soft_target_loss(logits: torch.Tensor, soft: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The loss on mixed (soft, already smoothed) targets: softmax CE, or per-label BCE."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, soft.to(logits.dtype))
    return F.cross_entropy(logits, soft)


def output_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities (softmax) or, multi-label, one probability per label (sigmoid)."""
    logits = logits.float()
    return logits.sigmoid() if multi_label else logits.softmax(dim=-1)


def thresholds(label_threshold: float | list[float], num_labels: int) -> torch.Tensor:
    """The per-label thresholds as a (num_labels,) tensor."""
    if isinstance(label_threshold, (list, tuple)):
        return torch.tensor([float(v) for v in label_threshold])
    return torch.full((num_labels,), float(label_threshold))


def labels_over_threshold(probs: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """0/1 predictions (N, labels): probability above the label's threshold.

    Strictly above: torchmetrics' rule, so predictions and the metrics agree at ties."""
    return (probs > threshold.to(probs.device)).to(torch.int64)
