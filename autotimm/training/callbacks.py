"""Lightning callbacks autotimm adds to every run: throughput, validation history, a
sync-free progress bar, the NaN/inf training-loss guard and last.ckpt without a second
write of the same state."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import RichProgressBar as _RichProgressBar

from autotimm.private_apis import (
    BAR_UPDATE,
    CHECKPOINT_LAST_PATH,
    CHECKPOINT_LAST_STEP,
    CHECKPOINT_SAVES_ON_TRAIN_EPOCH_END,
    LIVE_LOCK,
    LIVE_REFRESH_THREAD,
    LOGGER_CONNECTOR,
    SHOULD_UPDATE_LOGS,
    lightning_refresh_thread,
)
from autotimm.user_errors import UserError


def _sync(module: L.LightningModule) -> None:
    # only at phase boundaries, never per step
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class TrainThroughput(L.Callback):
    """Images per second over the training phases of the run (data loading included).

    The first batch of the run (warm-up, cudnn autotuning, compilation) is not counted.
    Logged as `train/images_per_s` each epoch; `images_per_s` holds the run's value.
    """

    # Not Lightning's ThroughputMonitor: it synchronises CUDA after every training batch and
    # logs a rolling window to the loggers; 15 us a step (235 us a logging step) vs 0.5 us
    # here (benchmarks/library_costs.py --clock cpu, shared 2-core x86 CPU, 2026-12-07).

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._seen_first = False

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self._seen_first and self._started is None:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        if not self._seen_first:
            _sync(pl_module)
            self._seen_first = True
            return
        self.images += int(batch[0].shape[0])

    def _stop(self, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            _sync(pl_module)
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(pl_module)
        if self.images_per_s is not None:
            pl_module.log("train/images_per_s", self.images_per_s, on_epoch=True, prog_bar=True)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


class ValidationHistory(L.Callback):
    """Keeps every epoch's validation metrics, to report the best epoch's values."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val/") and value.numel() == 1
        }
        if row:
            self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **row})

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        scored = [row for row in self.epochs if metric in row]
        if not scored:
            return self.epochs[-1] if self.epochs else None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda row: row[metric])


class RichProgressBar(_RichProgressBar):
    """Lightning's rich progress bar, reading the logged metrics only on some training steps.

    Reading them turns the step loss into a Python number: a GPU->host sync that stops the
    host from queueing the next step, and ImageClassifier calls `self.log` (about 1 ms of
    Python per value) only on the steps someone reads. So by default the bar reads them on
    the steps the loggers write anyway (Lightning's `trainer.log_every_n_steps` rule), at
    each epoch's end, and when `metrics_every_s` seconds have passed since it last read
    them (slow steps, single-process runs: the numbers stay live; such a read costs little
    next to the step).
    `metrics_every_n_steps=N` reads them every N training batches instead of the loggers'
    steps. The training bar's count moves as often as the bar redraws (`refresh_rate` a
    second), on every read and at the epoch's last batch.

    `refresh_rate` is redraws per second. Each redraw is rich laying out the whole table in
    a thread that holds the GIL: about 1.5 ms in a terminal (0.4 ms into a log file), so
    Lightning's default 100 redraws after nearly every short step and rich's own 10 a second
    still takes 1.5% of the training loop's time in a terminal; 4 a second takes 0.6% and
    still moves the count, rate and metrics several times a second.
    """

    def __init__(
        self,
        metrics_every_n_steps: int | None = None,
        refresh_rate: int = 4,
        *,
        metrics_every_s: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        if metrics_every_n_steps is not None and (
            isinstance(metrics_every_n_steps, bool) or int(metrics_every_n_steps) < 1
        ):
            raise UserError(
                f"metrics_every_n_steps must be >= 1 or null (the loggers' steps), "
                f"got {metrics_every_n_steps!r}"
            )
        if not float(metrics_every_s) > 0:
            raise UserError(f"metrics_every_s must be > 0 seconds, got {metrics_every_s!r}")
        self.metrics_every_n_steps = metrics_every_n_steps
        self.metrics_every_s = float(metrics_every_s)
        self._hold_metrics = False
        self._last_read = time.monotonic()
        self._decided: tuple[tuple[int, int], bool] | None = None
        # the training bar's count moves at most as often as the bar redraws (its Python,
        # about 30 us a step, is the bar's whole per-step cost)
        self._count_interval = 1 / refresh_rate if refresh_rate > 0 else 0.0
        self._counted_at = -float("inf")
        self._uncounted: int | None = None  # a count not shown yet (epochs ending early)
        self._run_trainer: L.Trainer | None = None  # the trainer of `setup` (None before)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._run_trainer = trainer

    def reads_metrics(self, batch_idx: int) -> bool:
        """Whether the bar reads the logged metrics after training batch `batch_idx`
        (ImageClassifier logs its step values on those steps). Asked inside the step and
        again at its end, with one answer per batch."""
        trainer = self._run_trainer
        key = (getattr(trainer, "current_epoch", 0), batch_idx)
        if self._decided is None or self._decided[0] != key:
            now = time.monotonic()
            # one process only: each rank's own clock could make ranks log on different steps
            late = getattr(trainer, "world_size", 1) == 1 and (
                now - self._last_read >= self.metrics_every_s
            )
            reads = self._on_schedule(batch_idx) or late
            if reads:
                self._last_read = now
            self._decided = (key, reads)
        return self._decided[1]

    def _on_schedule(self, batch_idx: int) -> bool:
        if self.metrics_every_n_steps is not None:
            return (batch_idx + 1) % self.metrics_every_n_steps == 0
        connector = getattr(self._run_trainer, LOGGER_CONNECTOR, None)
        return bool(getattr(connector, SHOULD_UPDATE_LOGS, False))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last_read = time.monotonic()
        self._uncounted = None

    def _show_uncounted(self) -> None:
        """Bring the training count up to date (an epoch stopped early by max_steps,
        should_stop or an iterable of unknown length; a validation within the epoch)."""
        if self._uncounted is not None:
            getattr(self, BAR_UPDATE)(self.train_progress_bar_id, self._uncounted)
            self._uncounted = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._show_uncounted()
        super().on_train_epoch_end(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._show_uncounted()
        super().on_validation_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        reads = self.reads_metrics(batch_idx)
        now = time.monotonic()
        last = batch_idx + 1 >= self.total_train_batches
        if not (reads or last or now - self._counted_at >= self._count_interval):
            # the bar redraws `refresh_rate` times a second: no redraw could show it yet
            self._uncounted = batch_idx + 1
            return
        self._counted_at, self._uncounted = now, None
        self._hold_metrics = not reads
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._hold_metrics = False

    def _update_metrics(self, trainer, pl_module) -> None:
        if not self._hold_metrics:
            super()._update_metrics(trainer, pl_module)

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        _refresh_promptly(getattr(self.progress, "live", None))


def _refresh_promptly(live: Any) -> None:
    """Give a started rich display a redraw thread that ends as soon as it is stopped.

    Lightning's thread sleeps a whole redraw interval between redraws, and the bar's stop
    joins it: at 4 redraws a second every stop (end of fit, of test) would wait up to 0.25 s.
    This one waits on the thread's stop event instead; it redraws the same way (only when
    Lightning asked for a redraw, under the display's lock).
    """
    lightning_thread = lightning_refresh_thread()
    old = getattr(live, LIVE_REFRESH_THREAD, None)
    if lightning_thread is None or type(old) is not lightning_thread or not old.is_alive():
        return

    class PromptRefreshThread(lightning_thread):
        def run(self) -> None:
            lock = getattr(self.live, LIVE_LOCK)
            while not self.done.wait(1 / self.refresh_per_second):
                if self.refresh_cond:
                    with lock:
                        self.live.refresh()
                    self.refresh_cond = False

    new = PromptRefreshThread(live, old.refresh_per_second)
    new.refresh_cond = old.refresh_cond
    old.stop()  # ends after its current sleep; nothing joins it
    setattr(live, LIVE_REFRESH_THREAD, new)
    new.start()


class NonFiniteLossError(ValueError, FloatingPointError):
    """The training loss became NaN or infinite (a bad-hyperparameter error, like ValueError)."""


class NonFiniteLossGuard(L.Callback):
    """Raise NonFiniteLossError when the training loss stops being finite.

    The check accumulates on the loss's device and looks at the result every
    `check_every_n_steps` training batches (and at the end of each epoch), so it adds no
    per-step GPU synchronisation. autotimm.app.run adds it to every run.
    """

    def __init__(self, check_every_n_steps: int = 10) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self._finite: torch.Tensor | None = None
        self._batches = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch, batch_idx
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        self._batches += 1
        if self._batches % self.check_every_n_steps == 0:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._finite is None:
            return
        finite, self._finite = bool(self._finite), None
        if finite:
            return
        lrs = sorted(
            {
                group.get("initial_lr", group["lr"])  # the configured lr, not the schedule's
                for opt in trainer.optimizers
                for group in opt.param_groups
            }
        )
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite (epoch {trainer.current_epoch}, "
            f"by step {trainer.global_step}, learning rate {', '.join(f'{lr:.3g}' for lr in lrs)})"
            "; try a lower learning rate or gradient clipping (trainer.gradient_clip_val)"
        )


class LastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` for last.ckpt (the latest state, written every validation) that
    hard-links the file another checkpoint callback wrote at the same step (the best one,
    on every epoch that improves) instead of writing the same state a second time, as
    timm's CheckpointSaver does. Only a file of the same kind is linked (full state or
    weights only, as this callback's `save_weights_only`). The link replaces last.ckpt
    atomically; a real write goes through the checkpoint IO (autotimm's LocalCheckpointIO
    renames a complete new file into place, so a linked best file is never written into;
    with another IO a linked last.ckpt is removed first). Rank zero decides and tells the
    other ranks. Where links fail (another file system) it writes as ModelCheckpoint does."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        found = self._written_at_this_step(trainer) if trainer.is_global_zero else None
        same_state = trainer.strategy.broadcast(found)
        if same_state is not None and self._linked(trainer, same_state, filepath):
            setattr(self, CHECKPOINT_LAST_STEP, trainer.global_step)
            setattr(self, CHECKPOINT_LAST_PATH, filepath)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(self)
            return
        if trainer.is_global_zero:
            _unshare(trainer, filepath)
        super()._save_checkpoint(trainer, filepath)

    @staticmethod
    def _linked(trainer: L.Trainer, source: str, filepath: str) -> bool:
        """Hard-link `source` over `filepath` (rank zero); every rank learns if it worked."""
        linked = True
        if trainer.is_global_zero:
            partial = f"{filepath}.{os.getpid()}.link"
            try:
                os.link(source, partial)
                os.replace(partial, filepath)  # atomic: the old last.ckpt until this moment
            except OSError:
                linked = False
                if os.path.lexists(partial):
                    os.remove(partial)
        return bool(trainer.strategy.broadcast(linked))

    def _written_at_this_step(self, trainer: L.Trainer) -> str | None:
        """The checkpoint another ModelCheckpoint saved at this global step with the same
        content (Lightning's own bookkeeping; None with a Lightning that lacks it)."""
        for callback in trainer.checkpoint_callbacks:
            if callback is self or not isinstance(callback, ModelCheckpoint):
                continue
            if callback.save_weights_only != self.save_weights_only:
                continue  # a weights-only best file cannot stand in for a resumable last
            if _saves_on_train_epoch_end(callback, trainer) != _saves_on_train_epoch_end(
                self, trainer
            ):
                continue  # saved at another point of the step: other loop counters
            path = getattr(callback, CHECKPOINT_LAST_PATH, None)
            step = getattr(callback, CHECKPOINT_LAST_STEP, None)
            if path and step == trainer.global_step and os.path.isfile(path):
                return path
        return None


def _saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: L.Trainer) -> bool | None:
    decide = getattr(callback, CHECKPOINT_SAVES_ON_TRAIN_EPOCH_END, None)
    return decide(trainer) if decide is not None else None


def _unshare(trainer: L.Trainer, filepath: str) -> None:
    """Before a real write of a last.ckpt that is a hard link: an IO that writes into the
    existing file would change the best file too, so that file goes first (autotimm's
    LocalCheckpointIO writes a new file and renames it: nothing to do)."""
    from autotimm.training.checkpoint_io import LocalCheckpointIO

    if isinstance(trainer.strategy.checkpoint_io, LocalCheckpointIO):
        return
    if os.path.isfile(filepath) and os.stat(filepath).st_nlink > 1:
        os.remove(filepath)
