"""Data pipeline: training img/s from a folder of JPEGs vs from device-resident data.

Writes its own folder of natural-sized JPEGs (default 500x375, ~10 classes), then trains
the same model through the project's config (ImageDataModule, ImageClassifier, trainer
node) fed three ways, alternating for ``--repeats`` rounds (median):

- ``synthetic``: one batch already on the device (the model's own speed);
- ``cpu``: ``data.decode=cpu``: PIL decode + timm transforms in the loader workers;
- ``gpu``: ``data.decode=gpu``: workers read bytes, decode (nvjpeg on CUDA) and the
  augmentation run batched on the training device (on a CPU device: on the CPU).

It also times each loader alone (no model: decode + augment + transfer), which shows
what a pipeline could deliver at most.

    python benchmarks/datapipe.py --model resnet18 --image-size 96 --batch-size 32
    python benchmarks/datapipe.py --model resnet50 --batch-size 256 --device cuda

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common

MODES = ("synthetic", "cpu", "gpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="backbone group or timm model name")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=96, help="model input (ViTs: fixed)")
    p.add_argument("--images", type=int, default=512, help="JPEGs to write")
    p.add_argument("--jpeg-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--root", default=None, help="folder for the JPEGs (kept; reused if there)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each run")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds (median)")
    p.add_argument("--num-workers", type=int, default=None, help="default: the project's")
    p.add_argument("--modes", default=",".join(MODES), help="subset of " + ",".join(MODES))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--precision", default=None, help="default: the project's (bf16-mixed/32)")
    p.add_argument(
        "--callbacks",
        choices=("none", "default"),
        default="none",
        help="default: also the project's default callbacks (progress bar, throughput, ...)",
    )
    p.add_argument("--loader-batches", type=int, default=8, help="batches for loader-only rates")
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.batch_size, args.image_size = "test_resnet", 4, 32
        args.images, args.jpeg_size, args.classes = 24, "120x90", 2
        args.steps, args.warmup, args.repeats, args.loader_batches = 2, 1, 1, 2
        args.num_workers = 0 if args.num_workers is None else args.num_workers
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"unknown --modes {unknown}; accepted: {', '.join(MODES)}")
    return args


def _write_jpeg(job: tuple[Path, int, int, int]) -> None:
    """One photo-like JPEG: a smooth colour field plus grain, quality 90 (baseline)."""
    import numpy as np
    from PIL import Image, ImageFilter

    path, index, width, height = job
    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3))
    image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    image = image.filter(ImageFilter.GaussianBlur(2))
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 10, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_jpegs(root: Path, count: int, size: tuple[int, int], classes: int) -> dict[str, Any]:
    """``count`` photo-like JPEGs in ``classes`` class folders (all cores write).

    Reuses the folder when it already holds that many images.
    """
    from concurrent.futures import ProcessPoolExecutor

    existing = sorted(root.rglob("*.jpg")) if root.is_dir() else []
    if len(existing) < count:
        jobs = []
        for i in range(count):
            folder = root / f"class_{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"img_{i:05d}.jpg", i, *size))
        workers = max(1, min(16, (os.cpu_count() or 1)))
        if workers == 1 or count < 64:
            for job in jobs:
                _write_jpeg(job)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_jpeg, jobs, chunksize=32))
        existing = sorted(root.rglob("*.jpg"))
    sizes = [p.stat().st_size for p in existing[:count]]
    return {"images": len(sizes), "avg_jpeg_kb": round(sum(sizes) / len(sizes) / 1024, 1)}


def loader_rate(datamodule: Any, device: Any, batches: int) -> float | None:
    """Images per second of the training loader alone, delivered on ``device``."""
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    seen = 0
    start = None
    for index in range(batches + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        batch = datamodule.transfer_batch_to_device(batch, device, 0)
        if hasattr(batch, "paths"):  # encoded: decode + augment on the device
            batch = datamodule.device_batch(batch, train=True)
        elif device.type == "cuda":
            batch = datamodule.on_after_batch_transfer(batch, 0)
        if index == 0:  # the first batch starts the workers
            common.sync(device)
            start = time.perf_counter()
        else:
            seen += int(batch[1].shape[0])
    common.sync(device)
    del iterator
    return seen / (time.perf_counter() - start) if start and seen else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import lightning as L
    from hydra.utils import instantiate

    from autotimm.app.compose import instantiate_each, prepare_model

    load_before = common.loadavg()
    device, precision = common.prepare(args)
    width, height = (int(v) for v in args.jpeg_size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="autotimm-datapipe-") as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "jpegs"
        started = time.perf_counter()
        folder = write_jpegs(root, args.images, (width, height), args.classes)
        print(f"{folder['images']} JPEGs in {root} ({folder['avg_jpeg_kb']} KB average, "
              f"{time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip

        def overrides(decode: str) -> list[str]:
            data = [
                "data=image_folder",
                f"data.root={root}",
                f"data.decode={decode}",
                f"data.batch_size={args.batch_size}",
                f"data.image_size={args.image_size}",
                "data.val_fraction=0.02",
                "data.test_fraction=0.02",
            ]
            if args.num_workers is not None:
                data.append(f"data.num_workers={args.num_workers}")
            return common.backbone_overrides(args.model) + data + [
                f"trainer.precision={precision}",
                f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
                f"trainer.devices={1 if device.index is None else [device.index]}",
                f"trainer.default_root_dir={tmp}",
                "~callbacks.model_checkpoint",
                "~callbacks.last_checkpoint",
            ]  # fmt: skip

        L.seed_everything(0, verbose=False)
        configs = {mode: common.compose(overrides("cpu" if mode == "synthetic" else mode))
                   for mode in args.modes}  # fmt: skip
        datamodules = {m: instantiate(configs[m].data) for m in args.modes if m != "synthetic"}
        first = configs[args.modes[0]]
        some_dm = next(iter(datamodules.values()), None) or instantiate(first.data)
        num_classes = some_dm.num_classes
        input_size = some_dm.data_config["input_size"]
        num_workers = some_dm.num_workers
        model = instantiate(first.model, num_classes=num_classes, class_names=None)
        model = prepare_model(model, first)
        callbacks = [] if args.callbacks == "none" else instantiate_each(first.callbacks)
        images, labels = common.synthetic_batch(
            args.batch_size, input_size[-1], num_classes, device, channels_last=True
        )

        loader_only = {}
        for mode, dm in datamodules.items():
            loader_only[mode] = loader_rate(dm, device, args.loader_batches)
            print(f"loader only: {mode:9s} {loader_only[mode] or float('nan'):9.1f} img/s")

        runs: dict[str, list[float | None]] = {mode: [] for mode in args.modes}
        for repeat in range(args.repeats):
            order = args.modes if repeat % 2 == 0 else list(reversed(args.modes))
            for mode in order:
                if mode == "synthetic":
                    batches = common.DeviceBatches(images, labels, args.warmup + args.steps)
                    fit = {"train_dataloaders": batches}
                else:
                    fit = {"datamodule": datamodules[mode]}
                speed = common.fit_timed(
                    configs[mode], model, args.warmup, args.steps, callbacks, **fit
                )
                runs[mode].append(round(speed, 2) if speed else None)
                print(f"repeat {repeat}: {mode:9s} {speed or float('nan'):9.1f} img/s", flush=True)

    speeds = {mode: common.median(values) for mode, values in runs.items()}
    result: dict[str, Any] = {
        "benchmark": "datapipe",
        "model": first.backbone.model_name,
        "batch_size": args.batch_size,
        "image_size": int(input_size[-1]),
        "jpeg_size": f"{width}x{height}",
        **folder,
        "num_workers": num_workers,
        "cpu_count": os.cpu_count(),
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "precision": precision,
        "callbacks": args.callbacks,
    }
    for mode in args.modes:
        result[f"{mode}_img_s"] = round(speeds[mode], 2) if speeds[mode] else None
        result[f"{mode}_runs"] = runs[mode]
    for mode, speed in loader_only.items():
        result[f"{mode}_loader_only_img_s"] = round(speed, 2) if speed else None
    synthetic = speeds.get("synthetic")
    for mode in ("cpu", "gpu"):
        if synthetic and speeds.get(mode):
            result[f"{mode}_vs_synthetic"] = round(speeds[mode] / synthetic, 4)
    if speeds.get("cpu") and speeds.get("gpu"):
        result["gpu_vs_cpu"] = round(speeds["gpu"] / speeds["cpu"], 4)
    result.update(common.environment(device))
    result["loadavg_1m"] = [load_before, common.loadavg()]
    result["gpu_pipeline_device"] = device.type  # where data.decode=gpu decoded here
    result["tiny"] = args.tiny
    print(
        "  ".join(f"{m}: {result.get(f'{m}_img_s')} img/s" for m in args.modes)
        + f"  ({result['model']} {result['image_size']}px, batch {args.batch_size}, "
        f"{num_workers} workers, {device})"
    )
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
