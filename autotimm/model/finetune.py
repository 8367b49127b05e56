"""Staged unfreezing (`model.freeze_backbone_epochs=N`): the head alone, then everything.

A Lightning `BaseFinetuning` callback. The optimizer is built over every parameter first
(the backbone's groups at `optimizer.backbone_lr_scale` x lr, `autotimm.optim.lr_groups`), so
the lr schedule covers the backbone from the start; the backbone is then frozen for the
first N epochs: no gradients (the optimizer skips parameters without one, weight decay
included) and eval mode, so BatchNorm statistics and dropout stay fixed, as with
`model.freeze_backbone=true`. At the start of epoch N it trains again. A resumed run
freezes or not by the epoch it resumes at.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning

log = logging.getLogger(__name__)


class StagedUnfreezing(BaseFinetuning):
    """Freeze `pl_module.backbone` for `epochs` epochs, then train it."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = int(epochs)
        self.frozen = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        # Nothing yet: the optimizer (built after this hook) must see the backbone's
        # parameters; on_fit_start freezes them.
        return None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.epochs:
            self._set_frozen(pl_module, True)
            log.info("staged unfreezing: the backbone is frozen until epoch %d", self.epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.frozen and trainer.current_epoch >= self.epochs:
            self._set_frozen(pl_module, False)
            log.info("staged unfreezing: the backbone trains from epoch %d", trainer.current_epoch)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Any) -> None:
        # the optimizer already holds every parameter: no param group to add
        return None

    def _set_frozen(self, pl_module: L.LightningModule, frozen: bool) -> None:
        self.frozen = frozen
        # ImageClassifier.train() keeps a frozen backbone in eval mode (BatchNorm, dropout)
        pl_module.freeze_backbone = frozen
        if frozen:
            self.freeze(pl_module.backbone, train_bn=False)
        else:
            self.make_trainable(pl_module.backbone)
        pl_module.backbone.train(not frozen and pl_module.training)
