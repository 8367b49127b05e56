"""Stop a run whose training loss is NaN or infinite (so a sweep records the trial as failed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch


class NonFiniteLossError(ValueError, FloatingPointError):
    """The training loss became NaN or infinite (a bad-hyperparameter error, like ValueError)."""


class NonFiniteLossGuard(L.Callback):
    """Raise NonFiniteLossError when the training loss stops being finite.

    The check accumulates on the loss's device and looks at the result every
    `check_every_n_steps` training batches (and at the end of each epoch), so it adds no
    per-step GPU synchronisation. autotimm.run adds it to every run.
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
