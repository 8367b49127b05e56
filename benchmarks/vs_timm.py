"""A whole run side by side with timm's own train.py: same PNG folder, same recipe.

Builds (once) a folder of Fashion-MNIST PNGs (Debian's dataset-fashion-mnist IDX files),
``ROOT/{train,val,test}/<class>/*.png`` (test holds the same images as val: timm's train.py
validates on one split, autotimm also tests on one), then times each whole command from
launch to exit:

    timm      python <timm repo>/train.py --data-dir ROOT --train-split train --val-split val ...
    autotimm  python train.py data=image_folder data.root=ROOT ...   (the project's defaults:
              W&B offline + CSV, checkpoints, test pass, model cost, confusion matrix)

Recipe: resnet18 at 32 px from scratch, AdamW lr 1e-3 wd 0.05, cosine without warm-up,
batch 64, hflip 0.5, colour jitter 0.4, no label smoothing, 0 loader workers, CPU.
Besides wall time, each command's CPU seconds (its process tree) are recorded: on a machine
others share, those leave out the time spent waiting for a core.

    python benchmarks/vs_timm.py --timm-train ../pytorch-image-models/train.py

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "boot")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timm-train", default=None, help="train.py of timm's repository")
    p.add_argument("--root", default=None, help="the PNG folder (built when missing)")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="launches of each command (median)")
    p.add_argument("--sides", default="timm,autotimm", help="which commands, in this order")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides")
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.train_images, args.val_images, args.epochs, args.repeats = 64, 32, 1, 1
    if "timm" in args.sides.split(",") and not args.timm_train:
        p.error("--timm-train is required unless --sides leaves timm out")
    return args


def _idx(name: str) -> Any:
    import numpy as np

    with gzip.open(FASHION / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def build_folder(root: Path, train_images: int, val_images: int) -> Path:
    """ROOT/{train,val,test}/<class>/<n>.png from Fashion-MNIST's train and test files."""
    from PIL import Image

    if (root / "test").is_dir():
        return root
    splits = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", train_images),
        "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", val_images),
    }
    for split, (images_file, labels_file, count) in splits.items():
        images, labels = _idx(images_file)[:count], _idx(labels_file)[:count]
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            for folder in [split] + (["test"] if split == "val" else []):
                target = root / folder / CLASSES[label]
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(target / f"{n:05d}.png")
    return root


def commands(args: argparse.Namespace, root: Path, out: Path) -> dict[str, list[str]]:
    timm = [
        sys.executable, str(args.timm_train), "--data-dir", str(root), "--train-split", "train",
        "--val-split", "val", "--model", "resnet18", "--input-size", "3", "32", "32",
        "-b", "64", "--epochs", str(args.epochs), "--opt", "adamw", "--lr", "1e-3",
        "--weight-decay", "0.05", "--sched", "cosine", "--warmup-epochs", "0",
        "--num-classes", "10", "--workers", "0", "--device", "cpu", "--hflip", "0.5",
        "--color-jitter", "0.4", "--smoothing", "0", "--output", str(out / "timm"),
    ]  # fmt: skip
    autotimm = [
        sys.executable, str(common.ROOT / "train.py"), "data=image_folder",
        f"data.root={root}", "backbone=resnet18", "data.image_size=32",
        "optimizer=adamw", "optimizer.lr=1e-3", "optimizer.weight_decay=0.05",
        "scheduler=cosine", f"trainer.max_epochs={args.epochs}", "data.batch_size=64",
        "data.num_workers=0", "trainer.accelerator=cpu", "data.hflip=0.5",
        "data.color_jitter=0.4", *args.extra,
    ]  # fmt: skip
    return {"timm": timm, "autotimm": autotimm}


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds (user + system of the finished child processes) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{command[1]} failed with exit code {done.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def top1(side: str, out: Path) -> float | None:
    """The last epoch's validation top-1 (timm's summary.csv) / val accuracy (results.json)."""
    if side == "timm":
        rows = list(csv.DictReader(next(out.glob("timm/*/summary.csv")).open()))
        return round(float(rows[-1]["eval_top1"]) / 100, 4) if rows else None
    record = json.loads(next(out.glob("outputs/runs/*/*/results.json")).read_text())
    value = record.get("val", {}).get("val/accuracy")
    return None if value is None else round(value, 4)  # a float32 value: 0.734000027...


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {}
    accuracy: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="autotimm-vs-timm-") as tmp:
        root = build_folder(Path(args.root or Path(tmp) / "png"), args.train_images,
                            args.val_images)  # fmt: skip
        env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
        sides = args.sides.split(",")
        for repeat in range(args.repeats):
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                out = Path(tmp) / f"{side}-{repeat}"
                out.mkdir()
                env["AUTOTIMM_OUTPUT_DIR"] = str(out / "outputs")
                runs.setdefault(side, []).append(timed(commands(args, root, out)[side], out, env))
                accuracy[side] = top1(side, out)
                print(f"repeat {repeat}: {side} {runs[side][-1]} top-1 {accuracy[side]}",
                      flush=True)  # fmt: skip
    wall = {side: common.median([r["wall_s"] for r in rs]) for side, rs in runs.items()}
    cpu = {side: common.median([r["cpu_s"] for r in rs]) for side, rs in runs.items()}
    both = "timm" in runs and "autotimm" in runs
    result = {
        "benchmark": "vs_timm",
        "train_images": args.train_images,
        "val_images": args.val_images,
        "epochs": args.epochs,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_ratio": round(wall["autotimm"] / wall["timm"], 3) if both else None,
        "cpu_ratio": round(cpu["autotimm"] / cpu["timm"], 3) if both else None,
        "top1": accuracy,
        "runs": runs,
        "extra_overrides": args.extra,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": common.loadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
