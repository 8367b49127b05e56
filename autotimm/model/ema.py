"""EMA of the weights (`model.ema_decay=0.9998`) with timm's `ModelEmaV3`, as a callback.

timm's warm-up (`use_warmup`: the decay grows with the step, 1 - (1 + step) ** -2/3, up
to `ema_decay`) keeps early averages from being dominated by the random initial weights.
While EMA is on:
- validation runs on the EMA weights (the raw ones are swapped back for training);
- every checkpoint's `state_dict` holds the EMA weights, so the best checkpoint, test,
  predict and export use them; the raw weights are kept under `ema_raw_state_dict` and
  restored (with the average) when a run resumes;
- after fitting, the model in memory holds the EMA weights.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn as nn

log = logging.getLogger(__name__)

RAW_KEY = "ema_raw_state_dict"


def _network(pl_module: nn.Module) -> nn.ModuleDict:
    """The averaged part: backbone and head (a view on the live modules, not a copy)."""
    return nn.ModuleDict({"backbone": pl_module.backbone, "head": pl_module.head})


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


class EmaWeights(L.Callback):
    """Keep an EMA of the backbone and head weights; evaluate and checkpoint with it."""

    def __init__(self, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = float(decay), warmup
        self.ema: Any = None  # timm's ModelEmaV3, made at fit start on the model's device
        self._restored: dict[str, torch.Tensor] | None = None  # EMA weights of a resumed run
        self._raw: dict[str, torch.Tensor] | None = None  # raw weights while validating
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(_network(pl_module), decay=self.decay, use_warmup=self.warmup)
        if self._restored is not None:
            self.ema.module.load_state_dict(self._restored)
            self._restored = None
        log.info("EMA of the weights: decay %s (timm ModelEmaV3, warm-up)", self.decay)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        # once per optimizer step, as timm's train.py (gradient accumulation: not per batch)
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.ema.update(_network(pl_module), step=trainer.global_step)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is None or self._raw is not None:
            return
        live = _network(pl_module)
        self._raw = _copy(live.state_dict())
        live.load_state_dict(self.ema.module.state_dict())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._raw is not None:
            _network(pl_module).load_state_dict(self._raw)
            self._raw = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is not None:  # test, predict and export after fit use the average
            _network(pl_module).load_state_dict(self.ema.module.state_dict())

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.ema is None:
            return
        state = checkpoint["state_dict"]
        averaged = self.ema.module.state_dict()
        raw = {k: state[k] for k in averaged if k in state}
        if self._raw is None:  # during validation the live weights are already the EMA ones
            checkpoint[RAW_KEY] = _copy(raw)
        else:
            checkpoint[RAW_KEY] = _copy(self._raw)
        state.update(_copy(averaged))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Resuming: the model was loaded with the EMA weights; train on from the raw ones.
        (Lightning calls this for test/validate/predict with a checkpoint too: those keep
        the EMA weights.)"""
        from lightning.pytorch.trainer.states import TrainerFn

        raw = checkpoint.get(RAW_KEY)
        if raw is None or trainer.state.fn != TrainerFn.FITTING:
            return  # no raw weights (a run without EMA: the average starts afresh)
        live = _network(pl_module)
        averaged = _copy(live.state_dict())
        live.load_state_dict(raw)
        if self.ema is not None:
            self.ema.module.load_state_dict(averaged)
        else:
            self._restored = averaged
