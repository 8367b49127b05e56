"""Where the framework's per-step time goes: one cause at a time, against a raw loop.

Each variant adds one thing to the previous one and trains the same timm model on the same
device-resident batch (steps timed like benchmarks/overhead.py):

    lightning   the raw loop's model and optimizer in a bare LightningModule (Lightning itself)
    classifier  ImageClassifier without metrics or lr logging (its step, loss logging)
    metrics     + the config's metrics and lr logging (the model node as configured)
    callbacks   + the default callbacks (progress bar, throughput, model summary)
    csv         + a CSV logger (writes every trainer.log_every_n_steps)

The variants and the raw loop alternate within one process for ``--repeats`` rounds; each
variant's cost is the median of its per-round time per step minus the raw loop's.

    python benchmarks/step_costs.py --model test_resnet --image-size 32 --clock cpu
    python benchmarks/step_costs.py --clock python   # the Python around the math only

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from typing import Any

import common
import overhead

VARIANTS = ("lightning", "classifier", "metrics", "callbacks", "csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="test_resnet", help="backbone group or timm model name")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=100, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds (median)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=(*common.CLOCKS, common.PYTHON_CLOCK),
        default="wall",
        help="python: wall time outside the forward, backward and optimizer math (the "
        "framework's own Python; the least noisy on a shared CPU)",
    )
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_size, args.image_size, args.num_classes = 4, 32, 10
        args.steps, args.warmup, args.repeats = 2, 1, 1
    # what overhead.Framework and overhead.RawLoop read
    args.device, args.precision, args.compile = "cpu", "32-true", False
    return args


def bare_module(raw: overhead.RawLoop) -> Any:
    """The raw loop's model, loss and optimizer as a LightningModule that logs nothing."""
    import lightning as L

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = raw.model

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return raw.criterion(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return raw.optimizer

    return Bare()


def _compute_modules(side: Any) -> list[Any]:
    """The modules whose forward is compute: the raw loop's timm model (the bare variant
    trains it too), an ImageClassifier's backbone and head."""
    model = side.model
    if hasattr(model, "backbone"):
        return [model.backbone, model.head]
    return [model] if isinstance(side, overhead.RawLoop) else []


class Variant(overhead.Framework):
    """One framework configuration, trained like overhead.Framework (its `run`)."""

    def __init__(self, name: str, args: argparse.Namespace, raw: overhead.RawLoop, root: str):
        from autotimm import ImageClassifier

        logger = "csv" if name == "csv" else "none"
        full = argparse.Namespace(**{**vars(args), "callbacks": "default", "logger": logger})
        super().__init__(full, raw.device, "32-true", root)
        if name == "lightning":
            self.model = bare_module(raw)
        elif name == "classifier":
            self.model = ImageClassifier(
                dict(self.cfg.backbone), args.num_classes, metrics=[],
                scheduler=self.cfg.scheduler.name,
            )  # fmt: skip
        if name not in ("callbacks", "csv"):
            self.callbacks = []


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    device, _ = common.prepare(args)
    torch.manual_seed(0)
    ms: dict[str, list[float]] = {name: [] for name in ("raw", *VARIANTS)}
    with tempfile.TemporaryDirectory(prefix="autotimm-step-costs-") as root:
        probe = overhead.Framework(
            argparse.Namespace(**{**vars(args), "callbacks": "none", "logger": "none"}),
            device,
            "32-true",
            root,
        )
        raw = overhead.RawLoop(args, device, "32-true", probe.cfg)
        sides = {"raw": raw, **{v: Variant(v, args, raw, root) for v in VARIANTS}}
        images, labels = common.synthetic_batch(
            args.batch_size, args.image_size, args.num_classes, device, channels_last=False
        )
        compute = (m for side in sides.values() for m in _compute_modules(side))
        timing = (
            common.compute_timed_apart(*compute)
            if args.clock == common.PYTHON_CLOCK
            else contextlib.nullcontext()
        )
        with timing:
            for repeat in range(args.repeats):
                names = list(sides) if repeat % 2 == 0 else list(reversed(sides))
                for name in names:
                    speed = sides[name].run(images, labels)
                    ms[name].append(1000 * args.batch_size / speed if speed else float("nan"))
                done = ", ".join(f"{n} {ms[n][-1]:.2f}" for n in ms)
                print(f"repeat {repeat}: {done}", flush=True)
    added = {
        name: round(common.median([v - r for v, r in zip(ms[name], ms["raw"], strict=True)]), 3)
        for name in VARIANTS
    }
    print("ms per step over the raw loop: " + ", ".join(f"{k} {v}" for k, v in added.items()))
    result = {
        "benchmark": "step_costs",
        "model": probe.cfg.backbone.model_name,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "num_classes": args.num_classes,
        "steps": args.steps,
        "repeats": args.repeats,
        "clock": args.clock,
        "raw_ms_per_step": round(common.median(ms["raw"]), 3),
        "added_ms_per_step": added,
        "ms_per_step_runs": {k: [round(x, 3) for x in v] for k, v in ms.items()},
        **common.environment(device),
        "loadavg_1m": common.loadavg(),
        "tiny": args.tiny,
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
