"""Scheduler glue for ImageClassifier: the run length a scheduler is sized from (total
optimizer steps, epochs, steps per epoch) and one scheduler step (timm's or torch's)."""

from __future__ import annotations

import math
from typing import Any

from torch.optim.lr_scheduler import LRScheduler

from autotimm.optim.factory import TrainingLength
from autotimm.user_errors import UserError


def training_length(trainer: Any, scheduler: Any) -> TrainingLength:
    """The Trainer's run length; `scheduler` (its name) is named in the errors."""
    if trainer is None:
        raise RuntimeError(
            "configure_optimizers needs a Trainer (schedulers are sized from the run "
            "length); call it through Trainer.fit."
        )
    estimated = trainer.estimated_stepping_batches
    if not math.isfinite(estimated):
        raise UserError(
            f"Scheduler {scheduler!r} needs a finite run length: set trainer "
            "max_epochs or max_steps (or use scheduler='none')."
        )
    total = max(1, int(estimated))
    batches = trainer.num_training_batches
    accumulate = max(1, int(trainer.accumulate_grad_batches or 1))
    if math.isfinite(batches) and batches > 0:
        steps_per_epoch = max(1, math.ceil(batches / accumulate))
    elif trainer.max_epochs and trainer.max_epochs > 0:
        steps_per_epoch = max(1, total // trainer.max_epochs)
    else:
        steps_per_epoch = total
    if trainer.max_epochs and trainer.max_epochs > 0:
        max_epochs = trainer.max_epochs
    else:
        max_epochs = math.ceil(total / steps_per_epoch)
    # a max_steps limit can end the run before max_epochs
    max_epochs = max(1, min(max_epochs, math.ceil(total / steps_per_epoch)))
    return TrainingLength(total, max_epochs, steps_per_epoch)


def step_scheduler(scheduler: Any, metric: Any | None, epoch: int, global_step: int) -> None:
    """Lightning's `lr_scheduler_step`: timm schedulers are not torch LRSchedulers, they
    take the epoch (`epoch + 1`: the one starting) or the update count."""
    if isinstance(scheduler, LRScheduler) and metric is None:  # every named one but plateau
        scheduler.step()
        return
    from timm.scheduler.scheduler import Scheduler as TimmScheduler

    if isinstance(scheduler, TimmScheduler):
        if scheduler.t_in_epochs:
            scheduler.step(epoch=epoch + 1, metric=metric)
        else:
            scheduler.step_update(num_updates=global_step, metric=metric)
    elif metric is None:
        scheduler.step()
    else:
        scheduler.step(metric)
