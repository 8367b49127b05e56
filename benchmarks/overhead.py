"""Framework overhead: ImageClassifier trained through the project's own config vs a raw loop.

The framework side composes conf/config.yaml (as train.py does), instantiates the model
node (ImageClassifier with the configured metrics, lr logging, scheduler), prepares it
like autotimm.app.run (channels_last on CUDA, optional in-place compile) and trains it with
the Lightning Trainer built from the trainer node (its precision, accelerator, ...).
The raw side is a hand-written loop over the same timm model, batch, precision and
optimizer (timm's factory, fused on CUDA like ours). Both read the same device-resident
synthetic batch, so only the training step is measured. The two alternate within one
process for ``--repeats`` rounds; the medians give the ratio framework / raw.

    python benchmarks/overhead.py --model resnet18 --image-size 128 --batch-size 32
    python benchmarks/overhead.py --model resnet50 --batch-size 256 --device cuda

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="backbone group or timm model name")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=128, help="ignored by fixed-size ViTs")
    # 100: two of the loggers' intervals (trainer.log_every_n_steps=50), as in a long epoch.
    # Each run is one epoch whose last step also logs (for the progress bar); in a 20-step
    # run that step is 1 in 23 instead of 1 in 50, which costs 0.01 of the ratio at 32 px.
    p.add_argument("--steps", type=int, default=100, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each run")
    p.add_argument("--repeats", type=int, default=9, help="alternating rounds (median)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--precision", default=None, help="default: the project's (bf16-mixed/32)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="torch.compile both sides")
    p.add_argument(
        "--callbacks",
        choices=("none", "default"),
        default="none",
        help="default: also the project's default callbacks (progress bar, throughput, ...)",
    )
    p.add_argument(
        "--logger",
        choices=("none", "csv"),
        default="none",
        help="csv: the framework also writes metrics.csv (every trainer.log_every_n_steps)",
    )
    p.add_argument(
        "--clock",
        choices=common.CLOCKS,
        default="wall",
        help="cpu: the process's CPU time (fairer than wall time on a CPU shared with others)",
    )
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.batch_size, args.image_size = "test_resnet", 4, 32
        args.steps, args.warmup, args.repeats, args.num_classes = 2, 1, 2, 10
    return args


def autocast_dtype(precision: str) -> Any:
    import torch

    precision = str(precision)
    if precision.startswith("bf16-mixed"):
        return torch.bfloat16
    if precision.startswith("16-mixed"):
        return torch.float16
    if precision in ("32", "32-true"):
        return None
    raise SystemExit(f"--precision {precision!r}: the raw loop supports bf16-mixed, 16-mixed, 32")


class Framework:
    """ImageClassifier + Trainer, both from the project's composed config."""

    def __init__(self, args: argparse.Namespace, device: Any, precision: str, root: str):
        from hydra.utils import instantiate

        from autotimm.app.compose import instantiate_each, prepare_model

        overrides = common.backbone_overrides(args.model) + [
            f"trainer.precision={precision}",
            f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            f"trainer.devices={1 if device.index is None else [device.index]}",
            f"trainer.default_root_dir={root}",
            f"compile={args.compile}",
        ]
        self.cfg = cfg = common.compose(overrides)
        model = instantiate(cfg.model, num_classes=args.num_classes, class_names=None)
        self.model = prepare_model(model, cfg)
        # "default": the project's callbacks group, less checkpointing (nothing to validate)
        self.callbacks = [] if args.callbacks == "none" else instantiate_each(_no_checkpoints(cfg))
        self.args, self.device, self.root = args, device, root

    def run(self, images: Any, labels: Any) -> float | None:
        from lightning.pytorch.loggers import CSVLogger

        args = self.args
        batches = common.DeviceBatches(images, labels, args.warmup + args.steps)
        logger = CSVLogger(self.root, name="csv") if args.logger == "csv" else False
        return common.fit_timed(
            self.cfg,
            self.model,
            args.warmup,
            args.steps,
            self.callbacks,
            clock_name=args.clock,
            logger=logger,
            train_dataloaders=batches,
        )


def _no_checkpoints(cfg: Any) -> Any:
    """The callbacks node without its checkpoint entries (they write at epoch ends)."""
    from omegaconf import OmegaConf

    nodes = OmegaConf.to_container(cfg.callbacks, resolve=False) or {}
    kept = {
        name: node
        for name, node in nodes.items()
        if node and not str(node.get("_target_", "")).endswith("Checkpoint")  # best and last
    }
    return OmegaConf.create(kept)


class RawLoop:
    """The same timm model, optimizer and precision in a plain PyTorch loop."""

    def __init__(self, args: argparse.Namespace, device: Any, precision: str, cfg: Any):
        import timm
        import torch
        from timm.optim import create_optimizer_v2

        backbone = cfg.backbone
        model = timm.create_model(
            backbone.model_name,
            num_classes=args.num_classes,
            drop_rate=backbone.drop_rate,
            drop_path_rate=backbone.drop_path_rate or 0.0,
            in_chans=backbone.in_chans,
        ).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if args.compile:
            model.compile(mode=cfg.get("compile_mode", "default"))
        self.dtype = autocast_dtype(precision)
        fused = {}
        name = str(cfg.optimizer.name).lower()
        if device.type == "cuda" and name in ("adamw", "adam", "sgd"):
            fused = {"fused": True}
        self.optimizer = create_optimizer_v2(
            model,
            opt=name,
            lr=float(cfg.optimizer.lr),
            weight_decay=float(cfg.optimizer.weight_decay),
            **dict(cfg.optimizer.kwargs or {}),
            **fused,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.model, self.args, self.device = model, args, device

    def step(self, images: Any, labels: Any) -> None:
        import torch

        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.criterion(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def run(self, images: Any, labels: Any) -> float:
        self.model.train()
        for _ in range(self.args.warmup):
            self.step(images, labels)
        now = common.clock(self.args.clock)
        common.sync(self.device)
        start = now()
        for _ in range(self.args.steps):
            self.step(images, labels)
        common.sync(self.device)
        seconds = now() - start
        self.optimizer.zero_grad(set_to_none=True)
        return self.args.steps * images.shape[0] / seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from autotimm.data.transforms import resolve_data_config

    load_before = common.loadavg()
    device, precision = common.prepare(args)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu times CPU steps only; a GPU step needs --clock wall")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="autotimm-overhead-") as root:
        framework = Framework(args, device, precision, root)
        raw = RawLoop(args, device, precision, framework.cfg)
        model_name = framework.cfg.backbone.model_name
        _, height, width = resolve_data_config(model_name, image_size=args.image_size)["input_size"]
        assert height == width, "square inputs only"
        images, labels = common.synthetic_batch(
            args.batch_size, height, args.num_classes, device, channels_last=True
        )
        runs: dict[str, list[float | None]] = {"framework": [], "raw": []}
        peaks: dict[str, float] = {"framework": 0.0, "raw": 0.0}
        sides = {"framework": framework, "raw": raw}
        for repeat in range(args.repeats):
            order = ("framework", "raw") if repeat % 2 == 0 else ("raw", "framework")
            for name in order:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                speed = sides[name].run(images, labels)
                runs[name].append(round(speed, 2) if speed else None)
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) / 2**20
                    peaks[name] = max(peaks[name], round(peak, 1))
                print(f"repeat {repeat}: {name:9s} {speed or float('nan'):9.1f} img/s", flush=True)

    framework_speed = common.median(runs["framework"])
    raw_speed = common.median(runs["raw"])
    ratio = framework_speed / raw_speed if framework_speed and raw_speed else None
    # each round's two runs are neighbours in time: their ratio cancels slow drifts in load
    paired = common.median(
        [f / r for f, r in zip(runs["framework"], runs["raw"], strict=True) if f and r]
    )
    print(
        f"{model_name} {height}px batch {args.batch_size} {precision} on {device}: "
        f"framework {framework_speed:.1f} img/s, raw {raw_speed:.1f} img/s, "
        f"ratio {ratio:.3f} (median of per-round ratios {paired:.3f})"
    )
    result = {
        "benchmark": "overhead",
        "model": model_name,
        "batch_size": args.batch_size,
        "image_size": height,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "precision": precision,
        "compile": args.compile,
        "callbacks": args.callbacks,
        "logger": args.logger,
        "clock": args.clock,
        "framework_img_s": round(framework_speed, 2) if framework_speed else None,
        "raw_img_s": round(raw_speed, 2) if raw_speed else None,
        "ratio": round(ratio, 4) if ratio else None,
        "paired_ratio": round(paired, 4) if paired else None,
        # what the framework adds to every step, from the two medians
        "overhead_ms_per_step": (
            round(1000 * args.batch_size * (1 / framework_speed - 1 / raw_speed), 2)
            if framework_speed and raw_speed
            else None
        ),
        "framework_runs": runs["framework"],
        "raw_runs": runs["raw"],
        **(
            {"framework_peak_mb": peaks["framework"], "raw_peak_mb": peaks["raw"]}
            if device.type == "cuda"
            else {}
        ),
        **common.environment(device),
        "loadavg_1m": [load_before, common.loadavg()],
        "tiny": args.tiny,
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
