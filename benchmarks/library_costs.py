"""What the library APIs autotimm could use instead of its own code cost, per call.

Each pair runs in one process, interleaved: a round times every side over a number of
calls with time.perf_counter (``--clock cpu``: the process's CPU time), the sides' order
alternating between rounds, and a side's cost is the median over ``--rounds`` rounds of
its time per call, in microseconds, on the CPU with one torch thread:

    loss_mean   torchmetrics MeanMetric.update(loss, weight) (its default NaN check, and
                nan_strategy="disable") vs LossMean.update (autotimm/metrics/stage_logs.py)
    metrics     the val metrics of conf/metrics/classification.yaml on a 64x10 batch:
                MetricCollection with and without compute groups fed (softmax, target), and
                one collection per input kind, vs MetricManager.update (each metric its own
                input); and MetricManager.keep, what a step that does not log pays
    grad_norm   lightning.pytorch.utilities.grad_norm(resnet18, 2) vs ImageClassifier's
                _global_norm (torch.nn.utils.get_total_norm) over the same gradients
    lr          LearningRateMonitor.on_train_batch_start vs ImageClassifier's `train/lr`
                (one param-group read, one self.log on a logging step), inside a live fit,
                on a step that logs and one that does not
    throughput  ThroughputMonitor.on_train_batch_end vs TrainThroughput's two batch hooks,
                inside a live fit
    import      hydra.utils.get_object vs autotimm.utils.import_object (and what each does
                with a path that does not import)

Per step: the metric updates, norms and lr values run on the logging steps only
(`trainer.log_every_n_steps`, 50) and at the epoch's end; the loss mean, `keep` and the
throughput hooks run on every step. Compare with a step of `benchmarks/overhead.py --model
test_resnet --image-size 32 --batch-size 32 --threads 1` (about 25 ms on a 2-core CPU).

    python benchmarks/library_costs.py                 # about 30 s
    python benchmarks/library_costs.py --rounds 15 --clock cpu   # a busy machine

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import common

LOG_EVERY_N_STEPS = 50  # the project's trainer.log_every_n_steps
_CLOCK = [time.perf_counter]  # --clock cpu: time.process_time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    p.add_argument("--calls", type=int, default=2000, help="calls per round of the cheap sides")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=common.CLOCKS,
        default="wall",
        help="cpu: the process's CPU time (steadier than wall time on a busy shared CPU)",
    )
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.rounds, args.calls = 1, 40
    args.device, args.precision = "cpu", "32-true"  # what common.prepare reads
    return args


def per_call_us(function: Callable[[], Any], calls: int) -> float:
    now = _CLOCK[0]
    start = now()
    for _ in range(calls):
        function()
    return (now() - start) * 1e6 / calls


def interleaved(
    sides: dict[str, Callable[[], Any]],
    calls: int,
    rounds: int,
    before: Callable[[str], Any] | None = None,
) -> dict[str, float]:
    """Median microseconds per call of each side; `before(side)` runs untimed first."""
    for name, function in sides.items():  # warm-up: caches, lazy imports, first-call setup
        if before:
            before(name)
        per_call_us(function, max(1, calls // 10))
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        for name in list(sides) if index % 2 == 0 else list(reversed(sides)):
            if before:
                before(name)
            runs[name].append(per_call_us(sides[name], calls))
    return {name: round(statistics.median(values), 2) for name, values in runs.items()}


def loss_mean(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torchmetrics import MeanMetric

    from autotimm.metrics.stage_logs import LossMean

    logits = torch.randn(64, 10, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (64,)))
    ours, checked, unchecked = LossMean(), MeanMetric(), MeanMetric(nan_strategy="disable")
    sides = {
        "autotimm_LossMean": (ours, lambda: ours.update(loss, 64)),
        "MeanMetric": (checked, lambda: checked.update(loss, 64)),
        "MeanMetric_nan_disable": (unchecked, lambda: unchecked.update(loss, 64)),
    }
    us = interleaved(
        {name: update for name, (_, update) in sides.items()},
        args.calls,
        args.rounds,
        before=lambda name: sides[name][0].reset(),
    )
    means = [ours.mean(), checked.compute(), unchecked.compute()]
    return {
        "us_per_step": us,
        "same_value": all(torch.allclose(means[0], m) for m in means[1:]),
        "MeanMetric_nan_strategy": checked.nan_strategy,
    }


def _default_metrics(num_classes: int) -> Any:
    from omegaconf import OmegaConf

    from autotimm.app.config_nodes import metric_list
    from autotimm.metrics.manager import MetricManager

    node = OmegaConf.to_container(
        OmegaConf.load(common.ROOT / "conf" / "metrics" / "classification.yaml")
    )
    node.pop("_target_")
    configs = metric_list(**node)
    return configs, MetricManager(configs, num_classes=num_classes)


def metrics(args: argparse.Namespace, stage: str = "val", classes: int = 10) -> dict[str, Any]:
    import torch
    from torchmetrics import MetricCollection

    from autotimm.metrics.inputs import as_preds, reads_only_argmax

    configs, manager = _default_metrics(classes)
    used = [c for c in configs if c.name in manager.get(stage)]

    def fresh() -> dict[str, Any]:
        return {c.name: c.build(classes, False, 0.5) for c in used}

    groups = MetricCollection(fresh(), compute_groups=True)
    plain = MetricCollection(fresh(), compute_groups=False)
    by_feed: dict[str, dict[str, Any]] = {}
    for config in used:  # the manager's rule: argmax labels where only the argmax is read
        metric = config.build(classes, False, 0.5)
        feed = "labels" if config.preds == "probs" and reads_only_argmax(metric) else config.preds
        by_feed.setdefault(feed, {})[config.name] = metric
    per_feed = {feed: MetricCollection(ms, compute_groups=True) for feed, ms in by_feed.items()}
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, classes, generator=generator)
    target = torch.randint(0, classes, (64,), generator=generator)

    def per_feed_update() -> None:
        for feed, collection in per_feed.items():
            collection.update(as_preds(logits, feed, False), target)

    sides = {
        "autotimm_MetricManager_update": lambda: manager.update(stage, logits, target, False),
        "MetricCollection_compute_groups": lambda: groups.update(logits.softmax(-1), target),
        "MetricCollection_no_groups": lambda: plain.update(logits.softmax(-1), target),
        "MetricCollection_per_input_kind": per_feed_update,
        "autotimm_MetricManager_keep": lambda: manager.keep(stage, logits, target),
    }

    def reset(name: str) -> None:
        for metric in manager.get(stage).values():
            metric.reset()
        manager.discard_kept(stage)
        for collection in (groups, plain, *per_feed.values()):
            collection.reset()

    calls = max(1, args.calls // 20)
    us = interleaved(sides, calls, args.rounds, before=reset)
    # the same batches once more into each, then the values compared
    reset("")
    manager.update(stage, logits, target, False)
    groups.update(logits.softmax(-1), target)
    ours = {name: metric.compute() for name, metric in manager.get(stage).items()}
    theirs = groups.compute()
    return {
        "stage": stage,
        "batch": list(logits.shape),
        "metrics": [c.name for c in used],
        "us_per_update": us,
        "compute_groups": {str(k): v for k, v in groups.compute_groups.items()},
        "input_kinds": {feed: list(ms) for feed, ms in by_feed.items()},
        "same_values": all(torch.allclose(ours[n], theirs[n]) for n in ours),
    }


def grad_norms(args: argparse.Namespace) -> dict[str, Any]:
    import inspect

    import timm
    import torch
    from lightning.pytorch.utilities import grad_norm

    from autotimm.model.classifier import _global_norm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10)
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).mean().backward()

    def ours() -> Any:  # as ImageClassifier.on_before_optimizer_step gathers them
        return _global_norm(
            [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        )

    sides = {"autotimm_global_norm": ours, "lightning_grad_norm": lambda: grad_norm(model, 2)}
    us = interleaved(sides, max(1, args.calls // 200), args.rounds)
    theirs = grad_norm(model, 2)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "us_per_call": us,
        "us_per_step": {k: round(v / LOG_EVERY_N_STEPS, 2) for k, v in us.items()},
        "same_total": bool(torch.allclose(ours(), theirs["grad_2.0_norm_total"], rtol=1e-4)),
        "grad_norm_keys": len(theirs),
        # one 0-d norm per parameter gathered with torch.tensor(list): a device-to-host
        # copy of each on a GPU, and the total on the CPU
        "grad_norm_copies_each_norm_to_host": "torch.tensor(list(" in inspect.getsource(grad_norm),
    }


def _both_kinds(
    args: argparse.Namespace, trainer: Any, sides: dict[str, Callable[[], Any]], logs: list[bool]
) -> dict[str, Any]:
    """`sides` timed on a step that does not log and on one that does (Lightning's
    `log_every_n_steps` rule; `logs[0]` tells autotimm's side), and their average over
    LOG_EVERY_N_STEPS steps."""
    every, result = trainer.log_every_n_steps, {}
    for kind, log_every in (("not_logging", 10**9), ("logging", 1)):
        trainer.log_every_n_steps, logs[0] = log_every, log_every == 1
        calls = args.calls // 4 if logs[0] else args.calls
        result[kind] = interleaved(sides, calls, args.rounds)
    trainer.log_every_n_steps = every
    result["average_per_step"] = {
        name: round(
            (result["not_logging"][name] * (LOG_EVERY_N_STEPS - 1) + result["logging"][name])
            / LOG_EVERY_N_STEPS,
            2,
        )
        for name in sides
    }
    return result


def _hook_costs(
    args: argparse.Namespace, trainer: Any, module: Any, outputs: Any, batch: Any
) -> dict:
    """Inside a live training batch: the lr and throughput pairs, their hooks called directly."""
    import inspect

    from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor

    from autotimm.metrics.manager import MetricManager
    from autotimm.metrics.stage_logs import StageLogs
    from autotimm.training.callbacks import TrainThroughput

    stage_logs, logs = StageLogs(MetricManager.for_model([], 10)), [False]

    def ours_lr() -> None:  # ImageClassifier.training_step (its logging-step flag decided)
        if logs[0]:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            stage_logs.log_step_value(module, "train/lr", float(lr))

    monitor = LearningRateMonitor()
    monitor.on_train_start(trainer)
    lr = _both_kinds(
        args,
        trainer,
        {
            "autotimm_train_lr": ours_lr,
            "LearningRateMonitor": lambda: monitor.on_train_batch_start(trainer, module, batch, 1),
        },
        logs,
    )
    lr["LearningRateMonitor_keys"] = sorted(k for k in trainer.callback_metrics if "lr-" in k)

    throughput = TrainThroughput()
    throughput.on_train_batch_end(trainer, module, outputs, batch, 0)  # the uncounted first

    def ours_throughput() -> None:
        throughput.on_train_batch_start(trainer, module, batch, 1)
        throughput.on_train_batch_end(trainer, module, outputs, batch, 1)

    lightning_throughput = ThroughputMonitor(batch_size_fn=lambda b: int(b[0].shape[0]))
    lightning_throughput.setup(trainer, module, "fit")
    lightning_throughput.on_train_start(trainer)
    hooks = {
        "autotimm_TrainThroughput": ours_throughput,
        "ThroughputMonitor": lambda: lightning_throughput.on_train_batch_end(
            trainer, module, outputs, batch, 1
        ),
    }
    speed = _both_kinds(args, trainer, hooks, logs)
    # read from its code: a torch.cuda.synchronize() in every training batch's update
    source = inspect.getsource(ThroughputMonitor)
    speed["ThroughputMonitor_syncs_cuda_each_step"] = "torch.cuda.synchronize()" in source
    return {"lr": lr, "throughput": speed}


def live_hooks(args: argparse.Namespace) -> dict[str, Any]:
    """A tiny fit (AdamW with two parameter groups, a per-step cosine schedule, a CSV
    logger) whose first batch end times the Lightning callbacks against autotimm's code."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(16, 10)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            groups = [
                {"params": [self.layer.weight], "weight_decay": 1e-4},
                {"params": [self.layer.bias], "weight_decay": 0.0},
            ]
            optimizer = torch.optim.AdamW(groups, lr=1e-3)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": cosine, "interval": "step"},
            }

    result: dict[str, Any] = {}

    class Driver(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if not result:
                result.update(_hook_costs(args, trainer, pl_module, outputs, batch))
            trainer.should_stop = True

    batches = common.DeviceBatches(torch.randn(32, 16), torch.randint(0, 10, (32,)), steps=2)
    with tempfile.TemporaryDirectory(prefix="autotimm-library-costs-") as root:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=2, logger=CSVLogger(root),
            callbacks=[Driver()], enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, log_every_n_steps=LOG_EVERY_N_STEPS,
        )  # fmt: skip
        with warnings.catch_warnings():  # ThroughputMonitor: no flops_per_batch on the module
            warnings.simplefilter("ignore")
            trainer.fit(Tiny(), train_dataloaders=batches)
    return result


def imports(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from hydra.utils import get_object

    from autotimm.utils import import_object

    path = "torch.optim.AdamW"
    us = interleaved(
        {
            "autotimm_import_object": lambda: import_object(path),
            "hydra_get_object": lambda: get_object(path),
        },
        args.calls,
        args.rounds,
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hydra_log = logging.getLogger("hydra.utils")
    hydra_log.addHandler(handler)
    propagate, hydra_log.propagate = hydra_log.propagate, False
    failures = {}
    try:
        for name, function in (("import_object", import_object), ("get_object", get_object)):
            try:
                function("torch.optim.NoSuchOptimizer")
            except Exception as exc:  # what each raises
                failures[name] = {
                    "raises": type(exc).__name__,
                    "message_lines": len(str(exc).splitlines()),
                }
            failures[name]["error_log_lines"] = len(records)
            records.clear()
    finally:
        hydra_log.removeHandler(handler)
        hydra_log.propagate = propagate
    return {"us_per_call": us, "bad_path": failures}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.quiet_lightning()
    import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK)
    import torch

    from autotimm.startup import drop_nvml_check_without_nvml

    drop_nvml_check_without_nvml()
    common.set_threads(args.threads)
    _CLOCK[0] = common.clock(args.clock)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "library_costs",
        "rounds": args.rounds,
        "clock": args.clock,
    }
    for name, measure in (
        ("loss_mean", loss_mean),
        ("metrics", metrics),
        ("grad_norm", grad_norms),
        ("hooks", live_hooks),
        ("import", imports),
    ):
        result[name] = measure(args)
        print(f"{name}: {result[name]}", flush=True)
    result.update(
        seconds=round(time.perf_counter() - started, 1),
        **common.environment(torch.device("cpu")),
        loadavg_1m=common.loadavg(),
        tiny=args.tiny,
    )
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
