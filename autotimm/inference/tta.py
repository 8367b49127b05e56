"""Test-time augmentation: class (or per-label) probabilities averaged over a few fixed views.

The views are deterministic (no randomness): the eval image itself, a centre zoom (crop
`zoom` of each side, resized back), and the horizontal mirror of each, but mirrors only when
the run trained with horizontal flips (`data.hflip > 0`): a model never shown mirrored
images (digits, text) reads them as other classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_ZOOMS: tuple[float, ...] = (0.875,)


@dataclass(frozen=True)
class TTAPlan:
    """Which views to average: the mirror (or not) and the centre zooms."""

    hflip: bool = True
    zooms: tuple[float, ...] = DEFAULT_ZOOMS

    @property
    def num_views(self) -> int:
        return (1 + len(self.zooms)) * (2 if self.hflip else 1)

    def describe(self) -> str:
        zooms = ", ".join(f"centre zoom {z:g}" for z in self.zooms)
        flip = " and their horizontal mirrors" if self.hflip else ""
        return f"{self.num_views} views: the image, {zooms}{flip}"


def plan_for(data_hparams: dict[str, Any], zooms: Sequence[float] = DEFAULT_ZOOMS) -> TTAPlan:
    """The views that fit how a run trained: mirrors only when it trained with flips."""
    hflip = float(data_hparams.get("hflip") or 0.0) > 0 and not data_hparams.get("no_aug")
    return TTAPlan(hflip=hflip, zooms=tuple(float(z) for z in zooms))


def _zoom(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Centre crop `fraction` of each side, resized back to the input size."""
    height, width = images.shape[-2:]
    crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = images[..., top : top + crop_h, left : left + crop_w]
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)


def views(images: torch.Tensor, plan: TTAPlan) -> list[torch.Tensor]:
    """The batch's views, in a fixed order."""
    base = [images] + [_zoom(images, z) for z in plan.zooms]
    return base + [v.flip(-1) for v in base] if plan.hflip else base


@torch.inference_mode()
def probabilities(model: nn.Module, images: torch.Tensor, plan: TTAPlan | None) -> torch.Tensor:
    """Softmax probabilities (N, classes), per-label sigmoid ones for a multi-label model:
    of the batch, or the mean over its TTA views."""
    from autotimm.model.multilabel import output_probabilities

    multi_label = bool(getattr(model, "multi_label", False))
    if plan is None:
        return output_probabilities(model(images), multi_label)
    batch = torch.cat(views(images, plan))  # one forward pass for all views
    probs = output_probabilities(model(batch), multi_label)
    return probs.view(plan.num_views, len(images), -1).mean(dim=0)
