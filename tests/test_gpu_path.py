"""The device decode path (data.decode=gpu), exercised with CPU tensors.

The same functions run on CUDA with nvjpeg; here they decode with torchvision on the CPU.
Each test compares against the CPU path (PIL + timm transforms): shapes, value ranges,
crop statistics and, where both sides can draw the same random numbers, the pixels.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autotimm.data import ImageDataModule
from autotimm.data.datasets import EncodedImageDataset, collate_encoded
from autotimm.data.gpu_transforms import (
    DeviceTransform,
    ImageDecodeError,
    adjust_,
    decode_images,
    eval_resize_size,
    random_erasing,
    sample_resized_crop_boxes,
)
from autotimm.data.transforms import AugmentConfig, build_transform, resolve_data_config

CPU = torch.device("cpu")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour field plus grain (not flat, not symmetric)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **kw) -> torch.Tensor:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def to_pil(decoded: torch.Tensor) -> Image.Image:
    """A decoded (C, H, W) uint8 tensor as a PIL image (same pixels for both paths)."""
    array = decoded.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def config(size: int = 32, backbone: str = "resnet18", **kw) -> dict:
    return resolve_data_config(backbone, image_size=size, **kw)


def bounds(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest normalised value per channel (pixels 0 and 255)."""
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


# ------------------------------------------------------------------------- decoding


def test_decode_matches_pil_for_jpeg_png_webp_and_gray():
    rgb = photo(60, 45)
    cases = {
        "jpeg": (encode(rgb, "JPEG", quality=92), None, 2.0),
        "png_rgba": (encode(rgb.convert("RGBA"), "PNG"), rgb, 0.0),
        "png_palette": (encode(rgb.convert("P"), "PNG"), rgb.convert("P").convert("RGB"), 0.0),
        "webp": (encode(rgb, "WEBP", quality=90), None, 2.0),
        "gray_jpeg": (encode(rgb.convert("L"), "JPEG", quality=92), None, 2.0),
        "cmyk_jpeg": (encode(rgb.convert("CMYK"), "JPEG", quality=92), None, 2.0),
    }
    decoded = decode_images([c[0] for c in cases.values()], CPU, channels=3)
    for (name, (data, reference, tolerance)), image in zip(cases.items(), decoded, strict=True):
        pil = Image.open(io.BytesIO(bytes(data.tolist())))
        pil.load()
        expected = np.asarray((reference if reference is not None else pil).convert("RGB"))
        got = image.permute(1, 2, 0).numpy()
        assert image.dtype == torch.uint8 and image.shape == (3, 45, 60), name
        # JPEG/WebP decoders may round an IDCT differently; on average they agree
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert diff.mean() <= tolerance / 4 and diff.max() <= max(tolerance * 4, 0), name


def test_decode_gray_mode_and_errors_name_the_file():
    rgb = photo(20, 10)
    gray = decode_images([encode(rgb, "JPEG")], CPU, channels=1)[0]
    assert gray.shape == (1, 10, 20)
    broken = torch.tensor(list(b"\xff\xd8\xffnot really a jpeg"), dtype=torch.uint8)
    with pytest.raises(ImageDecodeError, match="cat_17.jpg"):
        decode_images([broken], CPU, names=["cat_17.jpg"])


# ------------------------------------------------------------------------- crop boxes


@pytest.mark.parametrize("hw", [(375, 500), (500, 375), (40, 400), (64, 64)])
def test_crop_boxes_are_timms_boxes_for_the_same_seed(hw):
    from timm.data.transforms import RandomResizedCropAndInterpolation

    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    image = Image.new("RGB", (hw[1], hw[0]))
    random.seed(123)
    timm_boxes = [
        RandomResizedCropAndInterpolation.get_params(image, scale, ratio) for _ in range(300)
    ]
    random.seed(123)
    ours = []
    for _ in range(300):  # one image per call: same random draws in the same order
        ours.extend(sample_resized_crop_boxes([hw], scale, ratio))
    assert ours == [tuple(b) for b in timm_boxes]
    for top, left, h, w in ours:
        assert 0 <= top and top + h <= hw[0] and 0 <= left and left + w <= hw[1]


def test_crop_box_statistics_match_timm():
    """Independent draws: area and aspect distributions agree with timm's sampler."""
    from timm.data.transforms import RandomResizedCropAndInterpolation

    hw, scale, ratio, n = (375, 500), (0.08, 1.0), (3 / 4, 4 / 3), 4000
    random.seed(1)
    image = Image.new("RGB", (hw[1], hw[0]))
    timm_boxes = [
        RandomResizedCropAndInterpolation.get_params(image, scale, ratio) for _ in range(n)
    ]
    ours = sample_resized_crop_boxes([hw] * n, scale, ratio, random.Random(2))

    def stats(boxes):
        area = np.array([h * w / (hw[0] * hw[1]) for _, _, h, w in boxes])
        log_aspect = np.array([math.log(w / h) for _, _, h, w in boxes])
        centre_x = np.array([(left + w / 2) / hw[1] for _, left, _, w in boxes])
        return area, log_aspect, centre_x

    for a, b in zip(stats(ours), stats(timm_boxes), strict=True):
        assert abs(a.mean() - b.mean()) < 0.02
        assert abs(np.quantile(a, 0.9) - np.quantile(b, 0.9)) < 0.04
    area, log_aspect, _ = stats(ours)
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert np.abs(log_aspect).max() <= math.log(4 / 3) + 0.02


def erased_boxes(batch: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """The (top, left, h, w) box of zeros in each image of a batch of ones, or None."""
    boxes: list[tuple[int, int, int, int] | None] = []
    for image in batch:
        rows, cols = (image == 0).all(dim=0).nonzero(as_tuple=True)
        if rows.numel() == 0:
            boxes.append(None)
            continue
        top, left = int(rows.min()), int(cols.min())
        h, w = int(rows.max()) - top + 1, int(cols.max()) - left + 1
        assert rows.numel() == h * w  # one solid rectangle
        boxes.append((top, left, h, w))
    return boxes


def test_erase_boxes_follow_timm_limits():
    random.seed(1)
    boxes = erased_boxes(random_erasing(0.5, CPU)(torch.ones(2000, 3, 64, 48)))
    chosen = [b for b in boxes if b is not None]
    assert 0.4 < len(chosen) / len(boxes) < 0.6
    for top, left, h, w in chosen:
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48
        assert h < 64 and w < 48
        assert 0.01 <= h * w / (64 * 48) <= 0.36


@pytest.mark.parametrize(("re_prob", "erased"), [(1.0, 20), (0.0, 0)])
def test_device_random_erasing_uses_its_probability(re_prob, erased):
    """On the device path each image is erased with re_prob, by timm's RandomErasing."""
    decoded = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    augment = AugmentConfig(color_jitter=None, hflip=0.0, re_prob=re_prob)
    transform = DeviceTransform.from_config(config(32), True, augment)
    plain = DeviceTransform.from_config(
        config(32), True, AugmentConfig(color_jitter=None, hflip=0.0)
    )
    random.seed(0)
    batch = transform.from_decoded([decoded] * 20)
    random.seed(0)
    reference = plain.from_decoded([decoded] * 20)
    changed = (batch != reference).flatten(1).any(dim=1)
    assert int(changed.sum()) == erased
    assert ((batch == 0) | (batch == reference)).all()  # erased pixels are 0 ('const' mode)


def test_device_random_erasing_is_timms_class(monkeypatch):
    """The device path erases with timm.data.random_erasing.RandomErasing on the batch."""
    from timm.data import random_erasing as timm_erasing

    calls = []
    original = timm_erasing.RandomErasing.__call__

    def spy(self, batch):
        calls.append((self.probability, self.mode, self.device, tuple(batch.shape)))
        return original(self, batch)

    monkeypatch.setattr(timm_erasing.RandomErasing, "__call__", spy)
    augment = AugmentConfig(color_jitter=None, re_prob=0.7)
    DeviceTransform.from_config(config(16), True, augment).from_decoded(
        [torch.zeros((3, 20, 20), dtype=torch.uint8)] * 3
    )
    assert calls == [(0.7, "const", CPU, (3, 3, 16, 16))]


# --------------------------------------------------------------- device vs CPU path


@pytest.mark.parametrize(
    ("size", "hw", "crop_pct"),
    [(32, (375, 500), None), (32, (500, 375), None), (48, (30, 40), None), (64, (64, 64), 1.0)],
)
def test_eval_transform_matches_timm_eval(size, hw, crop_pct):
    decoded = decode_images([encode(photo(hw[1], hw[0]), "PNG")], CPU)[0]
    cfg = config(size, crop_pct=crop_pct)
    expected = build_transform(cfg, False)(to_pil(decoded)).unsqueeze(0)
    got = DeviceTransform.from_config(cfg, False, channels_last=True)(
        [encode(to_pil(decoded), "PNG")], CPU
    )
    assert got.shape == expected.shape == (1, 3, size, size)
    assert got.is_contiguous(memory_format=torch.channels_last)  # asked for explicitly
    # PIL and torch antialiased resizes differ by rounding only
    assert (got - expected).abs().mean() < 0.02
    assert (got - expected).abs().max() < 0.15


def test_eval_resize_size_is_torchvision_resize():
    from torchvision.transforms import Resize

    for hw in [(375, 500), (500, 375), (31, 97), (224, 224)]:
        image = Image.new("RGB", (hw[1], hw[0]))
        resized = Resize(36)(image)
        assert eval_resize_size(hw, (32, 32), 32 / 36.9) == (resized.height, resized.width)


def test_train_crop_matches_timm_for_the_same_seed():
    """hflip/jitter off: the same seeded crop boxes give the same pixels (up to resampling)."""
    images = [photo(120, 90, seed=s) for s in range(6)]
    cfg = config(32)
    augment = AugmentConfig(hflip=0.0, color_jitter=None)
    cpu_tf = build_transform(cfg, True, augment)
    random.seed(7)
    expected = torch.stack([cpu_tf(image) for image in images])
    random.seed(7)
    device_tf = DeviceTransform.from_config(cfg, True, augment)
    got = device_tf.from_decoded([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in images])
    assert got.shape == expected.shape == (6, 3, 32, 32)
    assert (got - expected).abs().mean() < 0.03


def test_train_batch_ranges_flips_and_jitter():
    """Full augmentation: values inside the normalised pixel range, flips about half."""
    left_dark = Image.new("RGB", (64, 48), (250, 250, 250))
    left_dark.paste((0, 0, 0), (0, 0, 32, 48))
    decoded = torch.from_numpy(np.array(left_dark)).permute(2, 0, 1)
    cfg = config(16)
    transform = DeviceTransform.from_config(
        cfg, True, AugmentConfig(scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), color_jitter=0.4)
    )
    torch.manual_seed(0)
    random.seed(0)
    batch = transform.from_decoded([decoded] * 400)
    low, high = bounds(cfg)
    assert batch.shape == (400, 3, 16, 16) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    assert (batch >= low - 1e-4).all() and (batch <= high + 1e-4).all()
    flipped = batch[..., :8].mean(dim=(1, 2, 3)) > batch[..., 8:].mean(dim=(1, 2, 3))
    assert 0.4 < flipped.float().mean() < 0.6
    # brightness/contrast/saturation jitter: the images are no longer all the same
    assert batch.mean(dim=(1, 2, 3)).std() > 0.05


def test_color_adjustments_match_torchvision():
    import torchvision.transforms.functional as TF

    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    factors = torch.tensor([0.6, 1.0, 1.3, 0.0])
    for op, fn in [
        ("brightness", TF.adjust_brightness),
        ("contrast", TF.adjust_contrast),
        ("saturation", TF.adjust_saturation),
    ]:
        got = adjust_(x.clone(), op, factors)
        expected = torch.stack([fn(x[i], float(factors[i])) for i in range(4)])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_random_erasing_zeroes_a_box_in_normalised_space():
    decoded = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    transform = DeviceTransform.from_config(
        config(32), True, AugmentConfig(color_jitter=None, hflip=0.0, re_prob=1.0)
    )
    batch = transform.from_decoded([decoded] * 20)
    erased = (batch == 0).all(dim=1).float().mean(dim=(1, 2))
    assert ((erased > 0.01) & (erased < 0.4)).all()


def test_no_aug_train_and_grayscale_model():
    decoded = decode_images([encode(photo(50, 40).convert("L"), "PNG")], CPU, channels=1)[0]
    cfg = config(24, in_chans=1)
    expected = build_transform(cfg, True, AugmentConfig(no_aug=True))(to_pil(decoded))
    got = DeviceTransform.from_config(cfg, True, AugmentConfig(no_aug=True)).from_decoded([decoded])
    assert got.shape == (1, 1, 24, 24) == (1, *expected.shape)
    assert (got[0] - expected).abs().mean() < 0.02


def test_auto_augment_has_no_device_version():
    with pytest.raises(ValueError, match="auto_augment"):
        DeviceTransform.from_config(config(16), True, AugmentConfig(auto_augment="rand-m9"))
    with pytest.raises(ValueError, match="decode='cpu'"):
        ImageDataModule("image_folder", root="/nowhere", decode="gpu", auto_augment="rand-m9")


# ------------------------------------------------------------------------- datamodule


def make_folder(root: Path, per_class: int = 6) -> Path:
    suffixes = [".jpg", ".png", ".webp", ".jpeg"]
    for c, name in enumerate(("cat", "dog")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = photo(80 + 10 * i, 60 + 5 * c, seed=10 * c + i)
            if suffixes[i % 4] == ".png":
                image = image.convert("RGBA")
            image.save(folder / f"{name}{i}{suffixes[i % 4]}")
    return root


def test_decode_option_is_checked_and_auto_is_cpu_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="decode='bogus' is not one of"):
        ImageDataModule("digits", decode="bogus")
    with pytest.raises(ValueError, match="source 'digits' has none"):
        ImageDataModule("digits", decode="gpu")
    auto = ImageDataModule("image_folder", root=str(make_folder(tmp_path)), decode="auto")
    assert auto.decode_on_device == torch.cuda.is_available()
    assert ImageDataModule("digits", decode="auto").decode_on_device is False


def test_encoded_dataset_and_collate(tmp_path):
    dm = ImageDataModule("image_folder", root=str(make_folder(tmp_path)), decode="gpu")
    dm.setup()
    encoded = EncodedImageDataset.of(dm.train_dataset.base)
    assert len(encoded) == len(dm.train_dataset)
    assert list(encoded.targets) == list(dm.train_dataset.targets)
    data, label, path = encoded[0]
    assert data.dtype == torch.uint8 and data.ndim == 1 and Path(path).is_file()
    assert bytes(data.tolist()) == Path(path).read_bytes()
    batch = collate_encoded([encoded[i] for i in range(3)])
    assert [len(x) for x in batch.images()] == [len(encoded[i][0]) for i in range(3)]
    assert batch.labels.tolist() == [encoded[i][1] for i in range(3)]


def test_gpu_decode_datamodule_batch_end_to_end_on_cpu(tmp_path):
    root = str(make_folder(tmp_path, per_class=8))
    common = dict(root=root, image_size=32, batch_size=4, val_fraction=0.25, seed=3)
    cpu = ImageDataModule("image_folder", decode="cpu", **common)
    gpu = ImageDataModule("image_folder", decode="gpu", **common)
    assert gpu.decode_on_device and not cpu.decode_on_device
    # eval batches (no shuffle): same files, same labels, nearly the same pixels
    x_cpu, y_cpu = next(iter(cpu.val_dataloader()))
    raw = next(iter(gpu.val_dataloader()))
    moved = gpu.transfer_batch_to_device(raw, CPU, 0)
    x_gpu, y_gpu = gpu.on_after_batch_transfer(moved, 0)  # no trainer: eval transform
    assert torch.equal(y_cpu, y_gpu)
    assert x_gpu.shape == x_cpu.shape == (4, 3, 32, 32)
    assert (x_gpu - x_cpu).abs().mean() < 0.03
    # a training batch: augmented, in range; channels_last only on CUDA devices
    x_train, y_train = gpu.device_batch(next(iter(gpu.train_dataloader())), train=True)
    low, high = bounds(gpu.data_config)
    assert x_train.shape == (4, 3, 32, 32) and y_train.shape == (4,)
    assert (x_train >= low - 1e-4).all() and (x_train <= high + 1e-4).all()
    assert x_train.is_contiguous() and x_cpu.is_contiguous()


def test_cpu_path_batches_pass_through_unchanged(tmp_path):
    dm = ImageDataModule("digits", image_size=8, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    moved = dm.transfer_batch_to_device(batch, CPU, 0)
    assert dm.on_after_batch_transfer(moved, 0) is moved


def test_gpu_decode_trains_through_lightning_on_cpu(tmp_path):
    import lightning as L

    from autotimm import ImageClassifier

    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((batch[0].shape, batch[0].dtype))

    root = make_folder(tmp_path / "data", per_class=6)
    (tmp_path / "files.csv").write_text(
        "path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(root.rglob("*.*")))
    )
    for source, extra in [("image_folder", {"root": str(root)}),
                          ("csv", {"csv_file": str(tmp_path / "files.csv")})]:  # fmt: skip
        seen.clear()
        dm = ImageDataModule(source, decode="gpu", image_size=32, batch_size=4, **extra)
        model = ImageClassifier("test_resnet", num_classes=2, metrics=[], scheduler=None)
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=2,
            limit_val_batches=1,
            num_sanity_val_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Record()],
        )
        trainer.fit(model, datamodule=dm)
        assert seen == [(torch.Size([4, 3, 32, 32]), torch.float32)] * 2, source


# ------------------------------------------------------------------ CUDA (skipped here)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_nvjpeg_decode_and_fallbacks_match_cpu():
    rgb = photo(120, 90)
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG", quality=92)  # nvjpeg may refuse: CPU fallback
    encoded = [
        encode(rgb, "JPEG", quality=92),
        encode(rgb, "JPEG", quality=92, progressive=True),
        encode(rgb.convert("L"), "JPEG", quality=92),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(rgb, "WEBP", quality=90),
        torch.frombuffer(bytearray(cmyk.getvalue()), dtype=torch.uint8),
    ]
    on_gpu = decode_images(encoded, "cuda")
    on_cpu = decode_images(encoded, CPU)
    for index, (g, c) in enumerate(zip(on_gpu, on_cpu, strict=True)):
        assert g.is_cuda and g.dtype == torch.uint8 and g.shape == c.shape, index
        diff = (g.cpu().int() - c.int()).abs().float()
        assert diff.mean() < 2.0, index  # IDCT / chroma upsampling differences only


@needs_cuda
def test_cuda_transform_matches_cpu_transform():
    encoded = [encode(photo(100 + 7 * i, 80), "JPEG", quality=95) for i in range(8)]
    cfg = config(64)
    eval_tf = DeviceTransform.from_config(cfg, False)
    on_gpu, on_cpu = eval_tf(encoded, "cuda"), eval_tf(encoded, CPU)
    assert on_gpu.is_cuda and on_gpu.is_contiguous(memory_format=torch.channels_last)
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.03
    train_tf = DeviceTransform.from_config(cfg, True, AugmentConfig())
    batch = train_tf(encoded, "cuda")
    low, high = bounds(cfg)
    assert batch.shape == (8, 3, 64, 64)
    assert (batch.cpu() >= low - 1e-4).all() and (batch.cpu() <= high + 1e-4).all()


@needs_cuda
def test_cuda_gpu_decode_trains_bf16_channels_last(tmp_path):
    import lightning as L

    from autotimm import ImageClassifier

    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            x = batch[0]
            seen.append((x.device.type, x.is_contiguous(memory_format=torch.channels_last)))

    dm = ImageDataModule(
        "image_folder", root=str(make_folder(tmp_path, 8)), decode="auto", image_size=64,
        batch_size=4,
    )  # fmt: skip
    assert dm.decode_on_device
    model = ImageClassifier("resnet18", num_classes=2, metrics=[], scheduler=None)
    model = model.to(memory_format=torch.channels_last)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=2, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[Record()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert seen == [("cuda", True)] * 2
