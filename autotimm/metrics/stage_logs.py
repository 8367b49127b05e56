"""What ImageClassifier logs per step and per epoch, at a few device ops per step.

Each Lightning `self.log` call costs about 1 ms of Python (on a CPU step of 20-40 ms, or a
GPU step of a few ms, that is the framework's whole budget). So every step only keeps its
logits and targets and adds to a device-side loss sum; `self.log` runs on the steps whose
values reach the loggers (every `trainer.log_every_n_steps`, as Lightning decides) and once
per epoch with the epoch values. The logged keys and values are the same as logging every
step.

The metrics get the kept batches in one `update` (concatenated) on those steps and at the
epoch's end (`MetricManager.keep`/`flush`: torchmetrics' states are sums and concatenations
over the rows, so one update of many rows gives the same state as one per batch, at about
0.1 ms of Python per update instead of per step).
"""

from __future__ import annotations

from typing import Any

import torch

from autotimm.metrics.manager import STAGES, MetricManager
from autotimm.private_apis import (
    CURRENT_FX_NAME,
    LOGGER_CONNECTOR,
    RESULTS,
    SHOULD_UPDATE_LOGS,
    TRAINER,
)


def is_logging_step(trainer: Any, batch_idx: int) -> bool:
    """True on the training steps whose values someone reads: the loggers (Lightning's
    `log_every_n_steps` rule), autotimm's progress bar (its `reads_metrics`), and the
    epoch's last batch (the bar shows the last step's loss at the epoch's end).

    Called inside the step (before Lightning counts it), like Lightning's own check.
    """
    if trainer is None:  # a step called by hand: nothing to log to
        return False
    if trainer.fast_dev_run or batch_idx + 1 == trainer.num_training_batches:
        return True
    bar_reads = getattr(trainer.progress_bar_callback, "reads_metrics", None)
    if bar_reads is not None and bar_reads(batch_idx):
        return True
    if not trainer.log_every_n_steps:
        return False
    connector = getattr(trainer, LOGGER_CONNECTOR, None)
    decided = getattr(connector, SHOULD_UPDATE_LOGS, None)
    if decided is None:  # a Lightning without the property: its documented rule
        return (trainer.global_step + 1) % trainer.log_every_n_steps == 0
    return bool(decided)


class LossMean:
    """The batch-size weighted mean loss of an epoch, summed on the loss's device."""

    # Not torchmetrics' MeanMetric: its update is 79 us a step with nan_strategy="disable"
    # (107 us with its default NaN check, also a host sync a step on a GPU) vs 4.6 us here
    # (benchmarks/library_costs.py --clock cpu, shared 2-core x86 CPU, 2026-12-07).

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, loss: torch.Tensor, batch_size: int) -> None:
        if self.total is None:
            self.total = loss.detach().float() * batch_size
        else:  # one in-place op a step (a half-precision loss adds into the float32 sum)
            self.total.add_(loss.detach(), alpha=batch_size)
        self.count += batch_size

    def mean(self) -> torch.Tensor | None:
        return None if self.total is None else self.total / self.count

    def reset(self) -> None:
        self.total, self.count = None, 0


class StageLogs:
    """Per-stage loss means and metric logging for a LightningModule.

    Keys: `{stage}/loss` (val, test) and `train/loss_epoch` are epoch means; `train/loss`
    is the step value; metrics log as `{stage}/{name}` (epoch) and `{stage}/{name}_step`
    (see MetricConfig).
    """

    def __init__(self, metrics: MetricManager) -> None:
        self.metrics = metrics
        self.losses = {stage: LossMean() for stage in STAGES}
        # Lightning's result keys (`{hook}.{name}`) of the step values logged so far
        self._step_keys: set[str] = set()
        self._step_values_live = False

    def log_step_value(self, module: Any, name: str, value: Any, prog_bar: bool = False) -> None:
        """`module.log` of a value of this step only (on_step, not reduced over the epoch)."""
        module.log(name, value, on_step=True, on_epoch=False, prog_bar=prog_bar)
        self._step_keys.add(f"{getattr(module, CURRENT_FX_NAME, None)}.{name}")
        self._step_values_live = True

    def retire_step_values(self, module: Any) -> None:
        """Mark the last logging step's values as read in Lightning's result collection.

        After *every* batch, Lightning rebuilds its progress-bar, callback and logger dicts
        from every valid result (`_LoggerConnector.on_batch_end`), calling `.item()` on the
        progress-bar ones: with values logged every N steps it repeats the last logging step's
        work N-1 times (~60 us a step on a CPU, and a host sync a step on a GPU). Those dicts
        are only ever updated, so the bar, callbacks and `trainer.*_metrics` keep showing the
        last values; the next logging step's `self.log` makes the entries valid again. (A run
        stopped after a non-logging step, e.g. by `max_time`, no longer sends the loggers a
        repeat of the last logged step's values under the stopping step's number.)
        Call it from training steps only: it looks in the active loop's result collection.
        """
        if not self._step_values_live:
            return
        self._step_values_live = False
        results = getattr(getattr(module, TRAINER, None), RESULTS, None)
        if results is None:
            return
        for key in self._step_keys:
            item = results.get(key)
            if item is not None and not item.has_reset:
                item.reset()

    def start_epoch(self, stage: str) -> None:
        self.losses[stage].reset()
        self.metrics.discard_kept(stage)

    def step(
        self,
        module: Any,
        stage: str,
        logits: torch.Tensor,
        target: torch.Tensor,
        loss: torch.Tensor,
        log_step: bool,
    ) -> None:
        """Accumulate one batch; with `log_step`, also log its per-step values."""
        self.losses[stage].update(loss, int(target.shape[0]))
        if not log_step:
            self.metrics.keep(stage, logits, target)
            if stage == "train":  # (a validation's results are another collection)
                self.retire_step_values(module)
            return
        self.metrics.flush(stage)
        step_values = self.metrics.update(stage, logits, target, step_values=True)
        if stage == "train":
            self.log_step_value(module, "train/loss", loss, prog_bar=True)
        for name, value in step_values.items():
            config = self.metrics.config(name)
            self.log_step_value(
                module,
                f"{stage}/{name}_step" if config.log_on_epoch else f"{stage}/{name}",
                value,
                prog_bar=config.prog_bar and not config.log_on_epoch,
            )

    def end_epoch(self, module: Any, stage: str) -> None:
        """Log the epoch values of `stage` (Lightning computes and resets the metrics)."""
        self.metrics.flush(stage)
        loss = self.losses[stage]
        if not loss.count:
            return
        module.log(
            "train/loss_epoch" if stage == "train" else f"{stage}/loss",
            loss.mean(),
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            # reduced across processes once per epoch, weighted by each one's images
            sync_dist=True,
            batch_size=loss.count,
        )
        loss.reset()
        for name, metric in self.metrics.get(stage).items():
            config = self.metrics.config(name)
            if config.log_on_epoch:
                # the Metric object: Lightning computes (and syncs) it, then resets it
                module.log(
                    f"{stage}/{name}",
                    metric,
                    on_step=False,
                    on_epoch=True,
                    prog_bar=config.prog_bar,
                )
            else:
                metric.reset()  # step values only: the next epoch starts afresh
