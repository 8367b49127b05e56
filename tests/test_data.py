"""Tests for autotimm.data: every source on real data, the input-size rule, and bad input.

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (installed by the CI
script); the other image data is sklearn's bundled digits or files written here by PIL.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autotimm.data import ImageDataModule, list_sources
from autotimm.data.files import CorruptImageError
from autotimm.data.idx import read_idx
from autotimm.data.sources.user_files import label_mapping
from autotimm.data.splits import limit_indices, stratified_split
from autotimm.data.transforms import resolve_data_config

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
COLORS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "bird": (30, 30, 200)}


def fashion_root() -> Path:
    """The Debian Fashion-MNIST folder; a missing package is a failure, not a skip."""
    if not (FASHION_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_ROOT}: run "
            "`apt-get install -y dataset-fashion-mnist` (as root) before the tests"
        )
    return FASHION_ROOT


def write_image(path: Path, color: tuple[int, int, int], size: int = 12) -> Path:
    """A real image file in the format its suffix names (PNG/JPEG/WebP), RGBA for PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size + 2), color)
    image.putpixel((0, 0), (255, 255, 255))  # not flat, so crops and flips are visible
    if path.suffix.lower() == ".png":
        image = image.convert("RGBA")  # alpha must still come out as 3 channels
    image.save(path)
    return path


def make_class_folders(root: Path, per_class: int, classes=("cat", "dog")) -> list[Path]:
    suffixes = [".png", ".JPG", ".webp", ".jpeg"]
    return [
        write_image(root / name / f"{name}{i}{suffixes[i % len(suffixes)]}", COLORS[name])
        for name in classes
        for i in range(per_class)
    ]


def split_paths(dataset) -> list[Path]:
    """File paths behind a transformed split (through the subset views)."""
    base, indices = dataset.base, None
    while not hasattr(base, "paths"):
        indices = base.indices if indices is None else base.indices[indices]
        base = base.base
    chosen = range(len(base.paths)) if indices is None else indices
    return [base.paths[i] for i in chosen]


def labels(dataset) -> list[int]:
    return [int(t) for t in dataset.targets]


# ---------------------------------------------------------------------- package


def test_list_sources_names_every_source():
    assert list_sources() == [
        "cifar10",
        "cifar100",
        "csv",
        "digits",
        "fashion_mnist",
        "image_folder",
        "synthetic",
    ]


def test_import_does_not_load_sklearn_or_pandas(import_probe):
    """Answered by one fresh interpreter (conftest.IMPORT_PROBE)."""
    assert import_probe["autotimm.data"] == []


def test_hydra_instantiates_from_config_with_lists():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "autotimm.data.ImageDataModule",
            "source": "synthetic",
            "image_size": 8,
            "synthetic_size": 40,
            "scale": [0.5, 1.0],
            "ratio": [0.9, 1.1],
        }
    )
    dm = instantiate(cfg)
    assert isinstance(dm, ImageDataModule)
    assert dm.augment.scale == (0.5, 1.0) and dm.augment.ratio == (0.9, 1.1)
    assert dm.hparams.source == "synthetic" and dm.hparams.synthetic_size == 40


# ----------------------------------------------------------------------- digits


def test_digits_real_images_split_and_batches():
    dm = ImageDataModule("digits", image_size=16, batch_size=32)
    assert dm.num_classes == 10
    assert dm.class_names == [str(d) for d in range(10)]
    sizes = [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)]
    assert sum(sizes) == 1797
    assert sizes[1] == sizes[2] == round(1797 * 0.15)
    for split in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        assert set(labels(split)) == set(range(10))  # stratified: every digit in every split
    raw_images = dm.train_dataset.base.base.images
    assert raw_images.dtype == np.uint8 and raw_images.shape[1:] == (8, 8)
    assert raw_images.max() == 255 and raw_images.min() == 0
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    assert dm.num_workers == 0 and dm.train_dataloader().persistent_workers is False


def test_setup_is_idempotent_and_predict_uses_test_split():
    dm = ImageDataModule("digits", image_size=8)
    dm.setup("fit")
    train, test = dm.train_dataset, dm.test_dataset
    dm.setup("test")
    assert dm.train_dataset is train and dm.test_dataset is test
    # the loaders read the same split (as uint8 images: see the test below)
    assert dm.predict_dataloader().dataset.base is test.base
    assert dm.test_dataloader().dataset.base is test.base


def test_loader_batches_are_the_normalised_images_of_the_datasets():
    """The loaders normalise whole uint8 batches (timm's prefetcher layout): the same
    images as the per-image float transform of `val_dataset`, up to float rounding."""
    dm = ImageDataModule("digits", image_size=16, batch_size=40)
    x, y = next(iter(dm.val_dataloader()))
    one_by_one = torch.stack([dm.val_dataset[i][0] for i in range(40)])
    assert x.dtype == torch.float32 and x.shape == one_by_one.shape == (40, 3, 16, 16)
    assert torch.allclose(x, one_by_one, atol=1e-5)
    assert torch.equal(y, torch.tensor([int(dm.val_dataset[i][1]) for i in range(40)]))
    assert dm.val_dataloader().dataset[0][0].dtype == torch.uint8  # what the workers make


def test_uint8_images_get_a_clear_error_from_the_model():
    """A DataLoader of one's own over a loader's (uint8) dataset: a message saying what to
    use, not torch's "expected scalar type Byte"."""
    from torch.utils.data import DataLoader

    from autotimm import ImageClassifier

    dm = ImageDataModule("digits", image_size=16, batch_size=8)
    model = ImageClassifier("test_resnet", 10, metrics=[])
    images, _ = next(iter(DataLoader(dm.val_dataloader().dataset, batch_size=8)))
    with pytest.raises(TypeError, match=r"uint8 images.*dm\.val_dataset.*collate_fn"):
        model(images)
    assert model(next(iter(dm.val_dataloader()))[0]).shape == (8, 10)  # the loader's batches


@pytest.mark.parametrize("re_prob", [0.0, 1.0])
def test_random_erasing_reaches_every_training_batch(re_prob):
    """The uint8 transform leaves random erasing out; the loader applies it to the batch
    (timm's RandomErasing, constant mode: the erased pixels are exactly 0 after
    normalising, which no real pixel is: (x - 255 mean) / (255 std) with integer x)."""
    dm = ImageDataModule("digits", image_size=16, batch_size=32, re_prob=re_prob)
    x, _ = next(iter(dm.train_dataloader()))
    erased = (x == 0).all(dim=1).flatten(1).any(dim=1)  # an all-channel zero pixel
    assert bool(erased.all()) if re_prob else not bool(erased.any())


def test_seeded_splits_repeat_for_same_seed_and_change_with_seed():
    def val_batch(seed: int) -> tuple[torch.Tensor, list[int]]:
        dm = ImageDataModule("digits", image_size=8, seed=seed, batch_size=300)
        x, _ = next(iter(dm.val_dataloader()))
        return x, labels(dm.val_dataset)

    a, b, c = val_batch(1), val_batch(1), val_batch(2)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[0].shape == c[0].shape
    assert not torch.equal(a[0], c[0])


def test_val_and_test_use_eval_transforms_train_augments():
    dm = ImageDataModule("digits", image_size=16, seed=0)
    train_tf, val_tf = str(dm.train_dataset.transform), str(dm.val_dataset.transform)
    assert "RandomResizedCrop" in train_tf and "RandomHorizontalFlip" in train_tf
    assert "Random" not in val_tf and "CenterCrop" in val_tf
    assert str(dm.test_dataset.transform) == val_tf
    # the same val item twice is identical; train items are re-augmented every time
    assert torch.equal(dm.val_dataset[0][0], dm.val_dataset[0][0])
    torch.manual_seed(0)
    train_draws = [dm.train_dataset[0][0] for _ in range(5)]
    assert any(not torch.equal(train_draws[0], t) for t in train_draws[1:])


def test_augmentation_knobs_reach_timm_transform():
    dm = ImageDataModule(
        "digits",
        image_size=16,
        hflip=0.0,
        scale=(0.5, 1.0),
        ratio=(0.8, 1.2),
        color_jitter=None,
        auto_augment="rand-m9-mstd0.5",
        re_prob=0.25,
    )
    text = str(dm.train_dataset.transform)
    assert "scale=(0.5, 1.0)" in text and "ratio=(0.8, 1.2)" in text
    assert "RandomHorizontalFlip" not in text and "RandAugment" in text
    assert "RandomErasing(p=0.25" in text
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 16, 16)


def test_grayscale_becomes_three_equal_channels_or_stays_one():
    dm3 = ImageDataModule("digits", image_size=8)
    x3, _ = dm3.val_dataset[5]
    mean = torch.tensor(dm3.data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(dm3.data_config["std"]).view(3, 1, 1)
    pixels = x3 * std + mean  # undo the normalisation: the three channels are one image
    assert x3.shape == (3, 8, 8)
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5)
    assert torch.allclose(pixels[1], pixels[2], atol=1e-5)
    assert pixels.max() > 0.9  # real strokes, not an empty image

    dm1 = ImageDataModule("digits", image_size=8, in_chans=1)
    x1, _ = dm1.val_dataset[5]
    assert x1.shape == (1, 8, 8)
    assert len(dm1.data_config["mean"]) == len(dm1.data_config["std"]) == 1


def test_num_classes_mismatch_raises_in_setup_naming_both_numbers():
    dm = ImageDataModule("digits", num_classes=5)
    with pytest.raises(ValueError, match=r"num_classes=5.*10 classes"):
        dm.setup("fit")
    assert ImageDataModule("digits", num_classes=10, image_size=8).num_classes == 10


def test_drop_last_only_for_train_and_never_empties_small_split():
    dm = ImageDataModule("digits", image_size=8, batch_size=100)
    assert dm.train_dataloader().drop_last is True
    assert dm.val_dataloader().drop_last is False
    small = ImageDataModule("digits", image_size=8, batch_size=100, limit=30)
    loader = small.train_dataloader()
    assert loader.drop_last is False
    assert sum(len(y) for _, y in loader) == 30


def test_state_dict_keeps_class_names_and_rejects_other_classes():
    dm = ImageDataModule("digits", image_size=8)
    state = dm.state_dict()
    assert state["class_names"] == [str(d) for d in range(10)]
    assert state["data_config"]["input_size"] == (3, 8, 8)
    dm.load_state_dict(state)
    with pytest.raises(ValueError, match="classes"):
        dm.load_state_dict({"class_names": ["a", "b"]})


# ---------------------------------------------------------------- fashion-mnist


def test_fashion_mnist_from_debian_package():
    dm = ImageDataModule("fashion_mnist", root=str(fashion_root()), image_size=28, in_chans=1)
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [
        51000,
        9000,
        10000,
    ]
    assert dm.class_names[0] == "T-shirt/top" and dm.class_names[9] == "Ankle boot"
    # the official test set in file order: its first labels are known
    assert labels(dm.test_dataset)[:10] == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    x, _ = dm.test_dataset[0]
    assert x.shape == (1, 28, 28)
    assert dm.data_config["crop_pct"] == 1.0  # small images: the eval crop keeps everything


def test_fashion_mnist_limit_and_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = fashion_root()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(src / name, raw / name)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # uncompressed too
        (raw / name).write_bytes(gzip.decompress((src / f"{name}.gz").read_bytes()))
    dm = ImageDataModule("fashion_mnist", root=str(tmp_path), limit=100, image_size=32)
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [100, 100, 100]
    assert len(set(labels(dm.train_dataset))) == 10  # the limit sample is stratified
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (64, 3, 32, 32) and int(y.max()) <= 9


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abcde")
    with pytest.raises(ValueError, match="bad-idx.*magic"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="short-idx.*truncated"):
        read_idx(short)
    good = tmp_path / "good-idx"
    good.write_bytes(b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(range(6)))
    assert read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    dm = ImageDataModule("fashion_mnist", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        dm.setup()
    assert str(tmp_path) in str(err.value)


# ------------------------------------------------------------------------ cifar


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_missing_without_download_names_root_and_flag(tmp_path, source):
    dm = ImageDataModule(source, root=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="data.download=true") as err:
        dm.setup()
    assert str(tmp_path / "nothing") in str(err.value)


# ----------------------------------------------------------------- image folder


def test_image_folder_train_val_test_layout(tmp_path):
    make_class_folders(tmp_path / "train", per_class=4)
    make_class_folders(tmp_path / "val", per_class=2)
    make_class_folders(tmp_path / "test", per_class=1, classes=("bird", "cat"))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    dm = ImageDataModule("image_folder", root=str(tmp_path), image_size=12, batch_size=4)
    assert dm.class_names == ["bird", "cat", "dog"]  # sorted union; bird only in test
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [8, 4, 2]
    assert labels(dm.train_dataset) == [1] * 4 + [2] * 4
    assert labels(dm.test_dataset) == [0, 1]
    assert {p.suffix for p in split_paths(dm.train_dataset)} == {".png", ".JPG", ".webp", ".jpeg"}
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 12, 12)
    # the eval pipeline keeps the colour: a red "cat" image is red after un-normalising
    mean = torch.tensor(dm.data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(dm.data_config["std"]).view(3, 1, 1)
    cat = (x[0] * std + mean).mean(dim=(1, 2))
    assert int(y[0]) == 1 and cat[0] > 0.6 and cat[1] < 0.3


def test_image_folder_single_folder_is_split_with_seed(tmp_path):
    files = make_class_folders(tmp_path, per_class=10, classes=("bird", "cat", "dog"))
    dm = ImageDataModule("image_folder", root=str(tmp_path), image_size=8, seed=3)
    parts = [split_paths(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert [len(p) for p in parts] == [20, 5, 5]
    assert sorted(sum(parts, [])) == sorted(files)  # disjoint and complete
    assert set(labels(dm.val_dataset)) == {0, 1, 2}
    again = ImageDataModule("image_folder", root=str(tmp_path), image_size=8, seed=3)
    other = ImageDataModule("image_folder", root=str(tmp_path), image_size=8, seed=4)
    assert split_paths(again.val_dataset) == parts[1]
    assert split_paths(other.val_dataset) != parts[1]


def test_image_folder_missing_root_names_path(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        ImageDataModule("image_folder", root=str(missing)).setup()


def test_image_folder_empty_folder_names_path(tmp_path):
    with pytest.raises(ValueError, match="no class folders") as err:
        ImageDataModule("image_folder", root=str(tmp_path)).setup()
    assert str(tmp_path) in str(err.value)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images") as err:
        ImageDataModule("image_folder", root=str(tmp_path)).setup()
    assert str(tmp_path) in str(err.value)


def test_corrupt_image_fails_naming_file_or_is_skipped_with_count(tmp_path):
    make_class_folders(tmp_path, per_class=6)
    broken = tmp_path / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(CorruptImageError, match="broken.png"):
        ImageDataModule("image_folder", root=str(tmp_path)).setup()
    dm = ImageDataModule("image_folder", root=str(tmp_path), skip_corrupt=True, image_size=8)
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt.*broken\.png"):
        dm.setup()
    parts = [split_paths(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert sum(len(p) for p in parts) == 12 and broken not in sum(parts, [])


def test_unreadable_file_at_load_time_names_file(tmp_path):
    make_class_folders(tmp_path, per_class=4)
    dm = ImageDataModule("image_folder", root=str(tmp_path), verify_images=False, image_size=8)
    victim = split_paths(dm.val_dataset)[0]
    victim.write_bytes(b"garbage")
    with pytest.raises(CorruptImageError, match=victim.name):
        dm.val_dataset[0]


# -------------------------------------------------------------------------- csv


def test_csv_split_files_numeric_labels_one_mapping(tmp_path):
    img = tmp_path / "imgs"
    rows = {
        "train": [("imgs/a.png", 10), ("imgs/b.png", 2), ("imgs/c.jpg", 10), ("imgs/d.png", 2)],
        "val": [(str(img / "e.png"), 2), (str(img / "f.png"), 10)],  # absolute paths
        "test": [("imgs/g.png", 30), ("imgs/h.png", 2)],  # 30 appears only in test
    }
    for split, items in rows.items():
        for path, _ in items:
            write_image(tmp_path / path if not Path(path).is_absolute() else Path(path), (9, 9, 9))
        lines = ["file,target"] + [f"{p},{label}" for p, label in items]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    dm = ImageDataModule(
        "csv", root=str(tmp_path), path_column="file", label_column="target", image_size=8
    )
    assert dm.class_names == ["2", "10", "30"]  # numeric order: 2 < 10 < 30
    assert labels(dm.train_dataset) == [1, 0, 1, 0]
    assert labels(dm.val_dataset) == [0, 1]
    assert labels(dm.test_dataset) == [2, 0]
    assert split_paths(dm.train_dataset)[0] == tmp_path / "imgs" / "a.png"
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (2, 3, 8, 8)


def test_csv_single_file_with_split_column_and_string_labels(tmp_path):
    lines = ["path,label,split"]
    for i in range(6):
        for name in ("zebra", "ant"):
            write_image(tmp_path / "pics" / f"{name}{i}.png", (100, 100, 100))
            split = "train" if i < 4 else ("valid" if i == 4 else "test")
            lines.append(f"pics/{name}{i}.png,{name},{split}")
    (tmp_path / "all.csv").write_text("\n".join(lines) + "\n")
    dm = ImageDataModule("csv", root=str(tmp_path), csv_file="all.csv", image_size=8)
    assert dm.class_names == ["ant", "zebra"]
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [8, 2, 2]


def test_csv_without_split_column_is_split_here(tmp_path):
    lines = ["path,label"]
    for i in range(20):
        write_image(tmp_path / f"{i}.png", (50, 50, 50))
        lines.append(f"{i}.png,{i % 2}")
    csv = tmp_path / "list.csv"
    csv.write_text("\n".join(lines) + "\n")
    dm = ImageDataModule("csv", csv_file=str(csv), image_size=8)  # absolute csv, no root
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [14, 3, 3]
    assert dm.class_names == ["0", "1"]


def test_csv_bad_column_and_missing_file_are_named(tmp_path):
    write_image(tmp_path / "ok.png", (1, 2, 3))
    (tmp_path / "train.csv").write_text("image,label\nok.png,1\n")
    with pytest.raises(ValueError, match="no column 'path'.*'image'"):
        ImageDataModule("csv", root=str(tmp_path)).setup()
    (tmp_path / "train.csv").write_text("path,label\nok.png,1\nghost.png,2\n")
    with pytest.raises(CorruptImageError, match="ghost.png"):
        ImageDataModule("csv", root=str(tmp_path)).setup()


def test_label_mapping_numeric_and_string_sorting():
    names, index = label_mapping(["10", "2", "2.0", "7"])
    assert names == ["2", "7", "10"]
    assert index == {"10": 2, "2": 0, "2.0": 0, "7": 1}
    names, index = label_mapping(["b", "10", "a"])
    assert names == ["10", "a", "b"] and index["a"] == 1


# -------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_sized():
    dm = ImageDataModule("synthetic", image_size=16, num_classes=4, synthetic_size=100, seed=5)
    assert dm.num_classes == 4 and dm.class_names[0] == "class_0"
    assert len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset) == 100
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 16, 16) and int(y.max()) <= 3
    same = ImageDataModule("synthetic", image_size=16, num_classes=4, synthetic_size=100, seed=5)
    other = ImageDataModule("synthetic", image_size=16, num_classes=4, synthetic_size=100, seed=6)
    assert torch.equal(dm.val_dataset[0][0], same.val_dataset[0][0])
    assert torch.equal(dm.val_dataset[0][0], dm.val_dataset[0][0])
    assert not torch.equal(dm.val_dataset[0][0], other.val_dataset[0][0])


# ---------------------------------------------------------------- input size


def test_input_size_rule():
    resnet = resolve_data_config("resnet18", image_size=32)
    assert resnet["input_size"] == (3, 32, 32)
    vit = resolve_data_config("vit_base_patch16_224", image_size=32)
    assert vit["input_size"] == (3, 224, 224)  # fixed input size wins over image_size
    assert vit["mean"] == (0.5, 0.5, 0.5)  # the backbone's own normalisation
    assert resolve_data_config("resnet18")["input_size"] == (3, 224, 224)
    assert resolve_data_config("resnet18")["crop_pct"] == 0.95
    assert resolve_data_config("efficientnet_b0")["crop_pct"] == 0.875
    assert resolve_data_config("convnext_tiny", image_size=[40, 48])["input_size"] == (3, 40, 48)
    assert resolve_data_config(None)["input_size"] == (3, 224, 224)
    assert resolve_data_config(None, image_size=96)["input_size"] == (3, 96, 96)
    default = resolve_data_config(None)
    assert default["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert resolve_data_config("resnet18", image_size=32)["crop_pct"] == 1.0  # small input
    assert resolve_data_config("resnet18", native_size=8)["crop_pct"] == 1.0  # small images
    assert resolve_data_config("resnet18", crop_pct=0.8, image_size=32)["crop_pct"] == 0.8
    single = resolve_data_config("resnet18", in_chans=1)
    assert single["input_size"] == (1, 224, 224)
    assert single["mean"] == pytest.approx((sum((0.485, 0.456, 0.406)) / 3,))


def test_vit_trains_at_224_even_on_8x8_digits():
    dm = ImageDataModule("digits", backbone="vit_base_patch16_224", image_size=32, limit=4)
    assert dm.data_config["input_size"] == (3, 224, 224)
    assert dm.val_dataset[0][0].shape == (3, 224, 224)
    assert dm.train_dataset[0][0].shape == (3, 224, 224)
    synthetic = ImageDataModule("synthetic", backbone="vit_base_patch16_224", synthetic_size=20)
    assert synthetic.val_dataset[0][0].shape == (3, 224, 224)


# ---------------------------------------------------------------- splits / bad input


def test_stratified_split_is_disjoint_complete_and_proportional():
    y = np.repeat(np.arange(4), 25)
    test, val, train = stratified_split(y, [0.2, 0.1], seed=0)
    assert [len(test), len(val), len(train)] == [20, 10, 70]
    assert sorted(np.concatenate([test, val, train]).tolist()) == list(range(100))
    assert np.bincount(y[test]).tolist() == [5, 5, 5, 5]
    assert np.array_equal(stratified_split(y, [0.2, 0.1], seed=0)[1], val)
    assert not np.array_equal(stratified_split(y, [0.2, 0.1], seed=1)[1], val)
    assert len(limit_indices(y, 8, seed=0)) == 8
    with pytest.raises(ValueError, match="sum to < 1"):
        stratified_split(y, [0.6, 0.5], seed=0)


def test_unknown_source_lists_accepted_ones():
    with pytest.raises(ValueError, match="'imagenet'") as err:
        ImageDataModule("imagenet")
    for name in list_sources():
        assert name in str(err.value)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="in_chans"):
        ImageDataModule("digits", in_chans=4)
    with pytest.raises(ValueError, match="batch_size"):
        ImageDataModule("digits", batch_size=0)
    with pytest.raises(ValueError, match="scale"):
        ImageDataModule("digits", image_size=8, scale=(1.0, 0.5)).setup()


# -------------------------------------------------------------------- lightning


def test_worker_processes_load_file_images(tmp_path):
    make_class_folders(tmp_path, per_class=6)
    dm = ImageDataModule("image_folder", root=str(tmp_path), image_size=8, num_workers=1)
    loader = dm.val_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers is True
    batches = list(loader)
    assert sum(len(y) for _, y in batches) == len(dm.val_dataset) == 2
    assert batches[0][0].shape[1:] == (3, 8, 8)


def test_lightning_fit_and_checkpoint_keep_class_names(tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ImageDataModule("digits", image_size=8, batch_size=32)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 3
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["ImageDataModule"]["class_names"] == [str(d) for d in range(10)]
    assert ckpt["datamodule_hyper_parameters"]["source"] == "digits"
