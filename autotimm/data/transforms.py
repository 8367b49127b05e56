"""Input-size / normalisation resolution from the backbone, and timm train/eval transforms.

The datamodule's loaders use timm's loader layout (`timm.data.create_loader` with its
prefetcher, what timm's train.py runs): the per-image transform stops at a uint8 tensor and
`NormalizingCollate` converts and normalises the whole batch at once (and applies random
erasing to it). Per image, the float conversion and `Normalize` cost about 60 us of Python
and small tensor ops: on the project's 2-core CPU the 4,000-image epoch of
`benchmarks/vs_timm.py` took 1.56 s that way, 1.33 s with timm's layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.data import create_transform
from timm.data import resolve_data_config as timm_resolve_data_config
from timm.data.random_erasing import RandomErasing
from torch.utils.data import default_collate

from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
# Below this side length the eval centre crop would cut away real content of the image
SMALL_IMAGE_SIZE = 64


def backbone_pretrained_cfg(backbone: str | None) -> dict[str, Any]:
    """The timm pretrained config of ``backbone`` as a dict, without creating the model.

    Empty for None, and (with a warning) for names timm has no config for, so the
    generic defaults apply; an unknown model name fails later, where the model is built.
    """
    if not backbone:
        return {}
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception as exc:  # e.g. "hf-hub:" names that would need the network
        log.warning("no timm pretrained config for %r (%s); using defaults", backbone, exc)
        return {}
    if cfg is None:
        log.warning("no timm pretrained config for %r; using default data config", backbone)
        return {}
    return cfg.to_dict()


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """An int or an (h, w) pair (a Hydra list too) as an (h, w) tuple."""
    if isinstance(image_size, int):
        return image_size, image_size
    size = tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise UserError(f"image_size must be an int or [height, width], got {image_size!r}")
    return size  # type: ignore[return-value]


def _per_channel(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Backbone (RGB) statistics for ``in_chans`` channels: their average if not 3."""
    values = tuple(float(v) for v in values)
    if in_chans == len(values):
        return values
    return (sum(values) / len(values),) * in_chans


def resolve_data_config(
    backbone: str | None,
    image_size: int | Sequence[int] | None = None,
    in_chans: int = 3,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    native_size: int | None = None,
) -> dict[str, Any]:
    """Input size, mean/std, interpolation and eval crop for a backbone and the data.

    Input size rule: a backbone whose timm config has ``fixed_input_size`` (ViT, DeiT,
    Swin, ...) always gets its own input size; otherwise ``image_size`` wins when set, then
    the backbone's size, then 224. Mean/std/interpolation/crop_pct come from the backbone's
    config (ImageNet defaults without one); ``in_chans != 3`` averages mean/std over RGB.
    When ``crop_pct`` is not given, small inputs or source images (side < 64) use 1.0 so
    the eval centre crop keeps the whole image.
    """
    pretrained = backbone_pretrained_cfg(backbone)
    base = timm_resolve_data_config(args={"in_chans": 3}, pretrained_cfg=pretrained)
    backbone_hw = tuple(pretrained["input_size"][-2:]) if pretrained.get("input_size") else None

    if pretrained.get("fixed_input_size") and backbone_hw is not None:
        height, width = backbone_hw
        if image_size is not None and _as_hw(image_size) != backbone_hw:
            log.info(
                "%s has a fixed input size: using %sx%s instead of image_size=%s",
                backbone,
                height,
                width,
                image_size,
            )
    elif image_size is not None:
        height, width = _as_hw(image_size)
    elif backbone_hw is not None:
        height, width = backbone_hw
    else:
        height = width = DEFAULT_IMAGE_SIZE

    if crop_pct is None:
        small = min(height, width) < SMALL_IMAGE_SIZE or (
            native_size is not None and native_size < SMALL_IMAGE_SIZE
        )
        crop_pct = 1.0 if small else float(base["crop_pct"])
    return {
        "input_size": (int(in_chans), int(height), int(width)),
        "mean": _per_channel(base["mean"], in_chans),
        "std": _per_channel(base["std"], in_chans),
        "interpolation": interpolation or base["interpolation"],
        "crop_pct": float(crop_pct),
    }


@dataclass
class AugmentConfig:
    """Training augmentation knobs, passed through to ``timm.data.create_transform``.

    ``None`` for scale/ratio means timm's defaults ((0.08, 1.0) and (3/4, 4/3));
    ``no_aug`` keeps only resize + crop + normalise for training too.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    color_jitter: float | None = 0.4
    auto_augment: str | None = None
    re_prob: float = 0.0
    no_aug: bool = False

    def __post_init__(self) -> None:
        # Hydra passes lists (ListConfig): keep the pairs as tuples
        if self.scale is not None:
            self.scale = tuple(self.scale)  # type: ignore[assignment]
        if self.ratio is not None:
            self.ratio = tuple(self.ratio)  # type: ignore[assignment]


def _pair(value: Sequence[float] | None, name: str) -> tuple[float, float] | None:
    """A (low, high) tuple from a list/tuple/ListConfig, or None."""
    if value is None:
        return None
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise UserError(f"{name} must be [low, high] with low <= high, got {list(value)!r}")
    return pair  # type: ignore[return-value]


def build_transform(
    data_config: dict[str, Any],
    is_training: bool,
    augment: AugmentConfig | None = None,
    uint8: bool = False,
) -> Callable[[Any], Any]:
    """timm transform for one split: augmentation for training, resize+crop for eval.

    Normalised float tensors; with `uint8`, (C, H, W) uint8 tensors without random erasing
    (timm's prefetcher layout: `NormalizingCollate` does the rest for a whole batch).
    """
    augment = augment or AugmentConfig()
    common: dict[str, Any] = {
        "input_size": data_config["input_size"],
        "interpolation": data_config["interpolation"],
        "mean": data_config["mean"],
        "std": data_config["std"],
        "crop_pct": data_config["crop_pct"],
        "use_prefetcher": uint8,
    }
    if not is_training:
        return create_transform(is_training=False, **common)
    return create_transform(
        is_training=True,
        no_aug=augment.no_aug,
        scale=_pair(augment.scale, "scale"),
        ratio=_pair(augment.ratio, "ratio"),
        hflip=augment.hflip,
        vflip=augment.vflip,
        # timm takes 0 (not None) for "no colour jitter"
        color_jitter=augment.color_jitter or 0.0,
        auto_augment=augment.auto_augment or None,
        re_prob=augment.re_prob,
        **common,
    )


class NormalizingCollate:
    """A DataLoader's collate for uint8 image tensors: stack, convert to float and
    normalise the batch in one go (as timm's `PrefetchLoader` does on its device), then
    random erasing per image with probability `re_prob` (timm's `RandomErasing`, which
    the uint8 transform leaves out). Equal to the per-image `ToTensor` + `Normalize` up
    to float rounding: (x - 255 mean) / (255 std) instead of (x / 255 - mean) / std.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], re_prob: float = 0.0):
        self.mean = torch.tensor([255.0 * m for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([255.0 * s for s in std]).view(1, -1, 1, 1)
        self.erasing = RandomErasing(re_prob, device="cpu") if re_prob > 0 else None

    def __call__(self, samples: list[Any]) -> Any:
        batch = default_collate(samples)  # [images, targets, ...]
        images = batch[0].float().sub_(self.mean).div_(self.std)
        if self.erasing is not None:
            images = self.erasing(images)
        batch[0] = images
        return batch
