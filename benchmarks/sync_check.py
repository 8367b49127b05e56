"""Host-device synchronisations per training step (CUDA only), and where they come from.

Trains ImageClassifier through the project's config on device-resident batches with
``torch.cuda.set_sync_debug_mode("warn")`` switched on after the warm-up steps, and counts
the synchronising calls per step, grouped by the Python line that made them. Any per-step
sync stops the host from queueing the next step ahead of the GPU (and from decoding the
next batch while the GPU trains), so the target is 0 per step.

Runs the project's default callbacks (progress bar, throughput) and metrics
(``--metrics classification``) unless told otherwise.

    python benchmarks/sync_check.py --model resnet18 --steps 20
    python benchmarks/sync_check.py --callbacks none --metrics minimal

On a CPU there is nothing to count: the result says so (syncs_per_step null).
The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import warnings
from typing import Any

import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="backbone group or timm model name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--callbacks", choices=("none", "default"), default="default")
    p.add_argument("--metrics", default="classification", help="metrics group (conf/metrics)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.batch_size, args.image_size = "test_resnet", 4, 32
        args.steps, args.warmup, args.num_classes = 2, 1, 10
    return args


def sync_counter(warmup: int) -> Any:
    """A callback switching CUDA sync debugging on after ``warmup`` batches."""
    import lightning as L
    import torch

    class SyncCounter(L.Callback):
        def __init__(self) -> None:
            self.seen = 0
            self.records: list[warnings.WarningMessage] = []
            self._catcher: Any = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.seen == warmup and pl_module.device.type == "cuda":
                self._catcher = warnings.catch_warnings(record=True)
                self.records = self._catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seen += 1

        def on_train_end(self, trainer, pl_module) -> None:
            if self._catcher is not None:
                torch.cuda.set_sync_debug_mode("default")
                self._catcher.__exit__(None, None, None)
                self._catcher = None

    return SyncCounter()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from hydra.utils import instantiate

    from autotimm.app.compose import instantiate_each, prepare_model

    device, precision = common.prepare(args)
    with tempfile.TemporaryDirectory(prefix="autotimm-sync-") as root:
        cfg = common.compose(
            common.backbone_overrides(args.model)
            + [
                f"metrics={args.metrics}",
                f"trainer.precision={precision}",
                f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
                f"trainer.default_root_dir={root}",
                "~callbacks.model_checkpoint",
                "~callbacks.last_checkpoint",
            ]
        )
        model = prepare_model(
            instantiate(cfg.model, num_classes=args.num_classes, class_names=None), cfg
        )
        callbacks = [] if args.callbacks == "none" else instantiate_each(cfg.callbacks)
        counter = sync_counter(args.warmup)
        images, labels = common.synthetic_batch(
            args.batch_size, args.image_size, args.num_classes, device, channels_last=True
        )
        batches = common.DeviceBatches(images, labels, args.warmup + args.steps)
        speed = common.fit_timed(
            cfg, model, args.warmup, args.steps, [counter, *callbacks], train_dataloaders=batches
        )
    syncs = [r for r in counter.records if "synchroniz" in str(r.message)]
    sites = collections.Counter(f"{r.filename}:{r.lineno}" for r in syncs)
    result = {
        "benchmark": "sync_check",
        "model": cfg.backbone.model_name,
        "batch_size": args.batch_size,
        "callbacks": args.callbacks,
        "metrics": args.metrics,
        "precision": precision,
        "steps": args.steps,
        "syncs_per_step": round(len(syncs) / args.steps, 2) if device.type == "cuda" else None,
        "sync_sites": {site: round(n / args.steps, 2) for site, n in sites.most_common(8)},
        "img_s": round(speed, 2) if speed else None,
        **common.environment(device),
        "tiny": args.tiny,
    }
    for site, per_step in result["sync_sites"].items():
        print(f"{per_step:6.2f} syncs/step  {site}")
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
