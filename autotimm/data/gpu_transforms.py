"""Decode and augment a batch of encoded images on the device (the ``data.decode=gpu`` path).

Loader workers only read file bytes; this module turns a list of encoded images into one
normalised (N, C, H, W) float batch in channels_last, on whatever device it is given:
JPEGs are decoded in one batched ``torchvision.io.decode_jpeg(..., device="cuda")`` call
(nvjpeg), everything nvjpeg cannot read (PNG, WebP, CMYK JPEGs, ...) falls back to
``torchvision.io.decode_image`` on the CPU. On a CPU device everything decodes on the CPU,
which is how the tests exercise this code.

The augmentation follows timm's CPU pipeline (``create_transform``) step by step:
- train: RandomResizedCrop with timm's scale/ratio sampling (10 attempts, then the
  central fallback), horizontal/vertical flips, ColorJitter(brightness, contrast,
  saturation), normalise, timm's own RandomErasing ('const' mode, on the batch's device);
- train with ``no_aug``: resize to the input size, normalise;
- eval: resize the shorter side to ``floor(size / crop_pct)``, centre crop, normalise.
Resizes use antialiasing like PIL. Crop boxes are sampled on the host (no device sync);
each image is cropped and resized on its own (images differ in size), the rest is batched.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing

from autotimm.data.files import CorruptImageError
from autotimm.user_errors import UserError

# nvjpeg reads baseline and progressive JPEGs; anything else decodes on the CPU
_JPEG_MAGIC = b"\xff\xd8\xff"
# the F.interpolate modes (they share timm's names); "random" picks bilinear or bicubic
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class ImageDecodeError(CorruptImageError):
    """An encoded image in a batch cannot be decoded; the message names the file."""


def is_jpeg(data: torch.Tensor) -> bool:
    """True when the encoded bytes start with the JPEG SOI marker."""
    return data.numel() >= 3 and bytes(data[:3].tolist()) == _JPEG_MAGIC


def _read_mode(channels: int) -> Any:
    from torchvision.io import ImageReadMode

    return ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    """16-bit PNGs decode as uint16: bring them to the 0..255 range like PIL's convert."""
    if image.dtype == torch.uint8:
        return image
    top = float(torch.iinfo(image.dtype).max)
    return (image.float() * (255.0 / top)).round_().to(torch.uint8)


def _decode_cpu(data: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    from torchvision.io import decode_image

    try:
        return _as_uint8(decode_image(data, mode=_read_mode(channels)))
    except (RuntimeError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode image {name}: {exc}") from exc


def decode_images(
    encoded: Sequence[torch.Tensor],
    device: torch.device | str,
    channels: int = 3,
    names: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Encoded images (1-d uint8 CPU tensors) -> list of (C, H, W) uint8 tensors on ``device``.

    On CUDA, JPEGs decode in one batched nvjpeg call; if the batch call fails, each JPEG
    is retried alone and the ones nvjpeg rejects decode on the CPU. Other formats always
    decode on the CPU and are then copied to the device.
    """
    device = torch.device(device)
    names = list(names) if names is not None else [f"#{i}" for i in range(len(encoded))]
    out: list[torch.Tensor | None] = [None] * len(encoded)
    on_cpu = list(range(len(encoded)))
    if device.type == "cuda":
        from torchvision.io import decode_jpeg

        jpegs = [i for i, data in enumerate(encoded) if is_jpeg(data)]
        mode = _read_mode(channels)
        if jpegs:
            try:
                decoded = decode_jpeg([encoded[i] for i in jpegs], mode=mode, device=device)
                for i, image in zip(jpegs, decoded, strict=True):
                    out[i] = image
            except RuntimeError:
                for i in jpegs:
                    try:
                        out[i] = decode_jpeg(encoded[i], mode=mode, device=device)
                    except RuntimeError:
                        pass  # e.g. CMYK or lossless JPEG: the CPU decoder reads it
        on_cpu = [i for i in range(len(encoded)) if out[i] is None]
    for i in on_cpu:
        image = _decode_cpu(encoded[i], channels, names[i])
        out[i] = image.to(device, non_blocking=True) if device.type != "cpu" else image
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------- geometry (host side)
def sample_resized_crop_boxes(
    sizes: Sequence[tuple[int, int]],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    rng: Any = None,
) -> list[tuple[int, int, int, int]]:
    """timm's RandomResizedCrop boxes ``(top, left, height, width)`` for images of ``sizes``.

    The same sampling as ``RandomResizedCropAndInterpolation.get_params``: up to 10 tries of
    an area fraction uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, then
    the central crop (aspect clamped to ``ratio``) when none fits.
    """
    rng = rng or random  # the module: the global RNG that seed_everything seeds
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for img_h, img_w in sizes:
        area = img_h * img_w
        for _ in range(10):
            target_area = rng.uniform(*scale) * area
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if w <= img_w and h <= img_h:
                boxes.append((rng.randint(0, img_h - h), rng.randint(0, img_w - w), h, w))
                break
        else:
            in_ratio = img_w / img_h
            if in_ratio < min(ratio):
                w, h = img_w, int(round(img_w / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = img_h, int(round(img_h * max(ratio)))
            else:
                w, h = img_w, img_h
            boxes.append(((img_h - h) // 2, (img_w - w) // 2, h, w))
    return boxes


def eval_resize_size(
    image_hw: tuple[int, int], out_hw: tuple[int, int], crop_pct: float
) -> tuple[int, int]:
    """The size timm's eval transform resizes an image to before the centre crop.

    Square outputs: torchvision ``Resize(floor(size / crop_pct))`` (shorter side, longer
    side truncated); other outputs: timm's ``ResizeKeepRatio`` to ``floor(out / crop_pct)``.
    """
    img_h, img_w = image_hw
    scale_h, scale_w = (math.floor(s / crop_pct) for s in out_hw)
    if scale_h == scale_w:
        short, long = (img_h, img_w) if img_h <= img_w else (img_w, img_h)
        new_short, new_long = scale_h, int(scale_h * long / short)
        return (new_short, new_long) if img_h <= img_w else (new_long, new_short)
    ratio = min(img_h / scale_h, img_w / scale_w)
    return round(img_h / ratio), round(img_w / ratio)


def center_crop_offsets(image_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int]:
    """torchvision ``CenterCrop`` offsets (negative when the image is smaller: padding)."""
    return (
        int(round((image_hw[0] - out_hw[0]) / 2.0)),
        int(round((image_hw[1] - out_hw[1]) / 2.0)),
    )


# ------------------------------------------------------------------- pixel ops (device)
def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(1, C, h, w) float -> (1, C, *size); antialiased like PIL when shrinking."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if mode == "nearest":
        return F.interpolate(image, size=size, mode="nearest")
    return F.interpolate(image, size=size, mode=mode, align_corners=False, antialias=True)


def _center_crop(image: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Centre crop of a (1, C, h, w) tensor, zero-padded where it is smaller (CenterCrop)."""
    h, w = image.shape[-2:]
    pad_h, pad_w = max(0, out_hw[0] - h), max(0, out_hw[1] - w)
    if pad_h or pad_w:
        image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = image.shape[-2:]
    top, left = center_crop_offsets((h, w), out_hw)
    return image[..., top : top + out_hw[0], left : left + out_hw[1]]


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of (N, 3, H, W) -> (N, 1, H, W) (torchvision's rgb_to_grayscale)."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_(x: torch.Tensor, op: str, factors: torch.Tensor) -> torch.Tensor:
    """One ColorJitter adjustment of a (N, C, H, W) [0, 1] float batch, in place.

    ``op`` is ``brightness`` / ``contrast`` / ``saturation`` (torchvision's
    ``adjust_*`` semantics), ``factors`` one factor per image (shape (N,)).
    """
    f = factors.to(x.device, x.dtype, non_blocking=True).view(-1, 1, 1, 1)
    if op == "brightness":
        return x.mul_(f).clamp_(0.0, 1.0)
    if op == "contrast":
        gray = _grayscale(x) if x.shape[1] == 3 else x
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        return x.mul_(f).add_((1.0 - f) * mean).clamp_(0.0, 1.0)
    if op == "saturation":
        if x.shape[1] != 3:
            return x  # torchvision leaves 1-channel images as they are
        gray = _grayscale(x)  # before x changes in place
        return x.mul_(f).add_((1.0 - f) * gray).clamp_(0.0, 1.0)
    raise ValueError(f"unknown colour adjustment {op!r}")


COLOR_OPS = ("brightness", "contrast", "saturation")


def color_jitter_(
    x: torch.Tensor, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """torchvision ``ColorJitter`` on a (N, C, H, W) batch of [0, 1] floats, in place.

    Each image gets its own factors, uniform in ``[max(0, 1 - v), 1 + v]``; the order of
    the three adjustments is random per batch (torchvision draws it per image).
    """
    amounts = dict(zip(COLOR_OPS, (brightness, contrast, saturation), strict=True))
    for index in torch.randperm(3).tolist():
        op = COLOR_OPS[index]
        if amounts[op] > 0:
            low, high = max(0.0, 1.0 - amounts[op]), 1.0 + amounts[op]
            adjust_(x, op, torch.empty(x.shape[0]).uniform_(low, high))
    return x


def random_erasing(probability: float, device: torch.device | str) -> RandomErasing:
    """timm's ``RandomErasing`` for a batch on ``device``, as the CPU path builds it.

    ``create_transform`` uses 'const' mode (erased pixels become 0 after normalising) and
    one region per image; each image is erased with ``probability``.
    """
    return RandomErasing(probability, mode="const", max_count=1, device=device)


# ------------------------------------------------------------------- the batch transform
@dataclass
class DeviceTransform:
    """One split's decode + augmentation on the device: ``transform(encoded, device)``.

    Built from the datamodule's resolved ``data_config`` and ``AugmentConfig`` with
    ``from_config``; the parameters mirror timm's ``create_transform`` arguments.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    is_training: bool = False
    no_aug: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.4
    re_prob: float = 0.0
    # None: channels_last on CUDA devices only (like the CPU path's batches); True: always
    channels_last: bool | None = None

    @classmethod
    def from_config(
        cls, data_config: dict[str, Any], is_training: bool, augment: Any = None, **kw: Any
    ) -> DeviceTransform:
        """From ``resolve_data_config`` output and an ``AugmentConfig`` (train only)."""
        args: dict[str, Any] = {
            "input_size": tuple(int(s) for s in data_config["input_size"]),
            "mean": tuple(data_config["mean"]),
            "std": tuple(data_config["std"]),
            "interpolation": data_config.get("interpolation") or "bilinear",
            "crop_pct": float(data_config.get("crop_pct") or 0.875),
            "is_training": is_training,
        }
        if is_training and augment is not None:
            if augment.auto_augment:
                raise UserError(
                    f"auto_augment={augment.auto_augment!r} has no device implementation; "
                    "use data.decode=cpu with auto_augment (or drop auto_augment)"
                )
            args.update(
                no_aug=bool(augment.no_aug),
                scale=tuple(augment.scale) if augment.scale else (0.08, 1.0),
                ratio=tuple(augment.ratio) if augment.ratio else (3.0 / 4.0, 4.0 / 3.0),
                hflip=float(augment.hflip),
                vflip=float(augment.vflip),
                color_jitter=float(augment.color_jitter or 0.0),
                re_prob=float(augment.re_prob or 0.0),
            )
        args.update(kw)
        return cls(**args)

    def __post_init__(self) -> None:
        if self.interpolation not in (*_INTERPOLATIONS, "random"):
            raise UserError(
                f"interpolation {self.interpolation!r} has no device implementation; "
                f"accepted: {sorted(_INTERPOLATIONS)} or 'random'"
            )
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def out_hw(self) -> tuple[int, int]:
        return int(self.input_size[1]), int(self.input_size[2])

    def _mode(self) -> str:
        if self.interpolation == "random":
            return random.choice(("bilinear", "bicubic"))
        return self.interpolation

    def _normalizer(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) so that ``x * scale - shift == (x / 255 - mean) / std``."""
        if device not in self._norm:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            self._norm[device] = ((1.0 / (255.0 * std)).to(device), (mean / std).to(device))
        return self._norm[device]

    def geometry(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Crop/resize (and flip, in training) decoded uint8 images into one float batch.

        Returns (N, C, H, W) float32 in the 0..255 range (channels_last on CUDA or if asked).
        """
        out_hw = self.out_hw
        channels = int(self.input_size[0])
        device = images[0].device
        n = len(images)
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda"
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty((n, channels, *out_hw), device=device, memory_format=memory_format)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        augment = self.is_training and not self.no_aug
        if augment:
            boxes = sample_resized_crop_boxes(sizes, self.scale, self.ratio)
            hflips = [random.random() < self.hflip for _ in range(n)]
            vflips = [random.random() < self.vflip for _ in range(n)]
        mode = self._mode()
        for i, image in enumerate(images):
            if image.shape[0] != channels:  # e.g. a grayscale decode for a 3-channel model
                image = image.expand(channels, -1, -1)
            x = image.unsqueeze(0)
            if augment:
                top, left, h, w = boxes[i]
                x = _resize(x[..., top : top + h, left : left + w].float(), out_hw, mode)
                if hflips[i]:
                    x = x.flip(-1)
                if vflips[i]:
                    x = x.flip(-2)
            elif self.is_training:  # no_aug: timm's Resize(input size) + CenterCrop
                x = _center_crop(_resize(x.float(), out_hw, mode), out_hw)
            else:
                resized = eval_resize_size(sizes[i], out_hw, self.crop_pct)
                x = _center_crop(_resize(x.float(), resized, mode), out_hw)
            out[i].copy_(x[0])
        if mode == "bicubic":
            out.clamp_(0.0, 255.0)  # bicubic overshoots; PIL clamps to the pixel range
        return out

    def __call__(
        self,
        encoded: Sequence[torch.Tensor],
        device: torch.device | str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Encoded images -> normalised (N, C, H, W) float32 batch on ``device``."""
        device = torch.device(device)
        images = decode_images(encoded, device, int(self.input_size[0]), names)
        return self.from_decoded(images)

    def from_decoded(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """The augmentation part alone, on decoded (C, H, W) uint8 images."""
        x = self.geometry(images)
        scale, shift = self._normalizer(x.device)
        augment = self.is_training and not self.no_aug
        if augment and self.color_jitter > 0:
            x.mul_(1.0 / 255.0)
            color_jitter_(x, self.color_jitter, self.color_jitter, self.color_jitter)
            x.mul_(255.0)
        x.mul_(scale).sub_(shift)
        if augment and self.re_prob > 0:
            random_erasing(self.re_prob, x.device)(x)  # in place, image by image
        return x
