"""ImageClassifier: timm backbone + ClassificationHead + metrics + optimizer/scheduler."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from autotimm.backbone import BackboneConfig, as_backbone_config, create_backbone
from autotimm.heads import ClassificationHead
from autotimm.logging_config import LoggingConfig
from autotimm.metrics import MetricConfig, MetricManager
from autotimm.optim import (
    TrainingLength,
    create_optimizer,
    create_scheduler,
    validate_optimizer,
    validate_scheduler,
)
from autotimm.regularization import BatchMixer, validate_regularization
from autotimm.utils import to_plain


class ImageClassifier(L.LightningModule):
    """End-to-end image classifier backed by a timm backbone.

    Args:
        backbone: timm model name or BackboneConfig.
        num_classes: number of target classes.
        metrics: a MetricManager or a list of MetricConfig (dicts accepted).
        logging_config: extra diagnostics (lr, gradient/weight norm, confusion matrix).
        lr: learning rate.
        weight_decay: weight decay (not applied to norm and bias parameters).
        optimizer: a name from `list_optimizers()` or {"class": ..., "params": {...}}.
        optimizer_kwargs: extra optimizer keyword arguments.
        scheduler: a name from `list_schedulers()`, {"class": ..., "params": {...}} or None.
        scheduler_kwargs: extra scheduler keyword arguments (plus `warmup_epochs`).
        head_dropout: dropout before the classifier layer.
        label_smoothing: label smoothing factor in [0, 1).
        freeze_backbone: train only the head; the backbone stays in eval mode.
        mixup_alpha: Mixup alpha (training only; 0 disables).
        cutmix_alpha: CutMix alpha (training only; 0 disables).
        class_names: optional class names, saved in checkpoints for prediction.
    """

    def __init__(
        self,
        backbone: str | BackboneConfig,
        num_classes: int,
        metrics: MetricManager | list[MetricConfig],
        logging_config: LoggingConfig | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str | dict = "adamw",
        optimizer_kwargs: dict | None = None,
        scheduler: str | dict | None = "cosine",
        scheduler_kwargs: dict | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        # Validate everything before building anything: errors name the bad value.
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        validate_regularization(label_smoothing, mixup_alpha, cutmix_alpha, head_dropout)
        optimizer, scheduler = to_plain(optimizer), to_plain(scheduler)
        validate_optimizer(optimizer)
        validate_scheduler(scheduler)
        backbone_config = as_backbone_config(to_plain(backbone))
        self.logging_config = LoggingConfig.coerce(to_plain(logging_config))
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but num_classes={num_classes}"
            )

        if isinstance(metrics, MetricManager):
            metric_configs = metrics.configs
        else:
            metric_configs = list(to_plain(metrics) or [])
        self.metrics = MetricManager(metric_configs, num_classes)

        self.save_hyperparameters(ignore=["backbone", "metrics", "logging_config"])
        # Plain-dict hparams: readable in hparams.yaml and W&B, and a checkpoint
        # rebuilds the model offline (weights come from the state dict, not the hub).
        self.hparams["backbone"] = {
            **backbone_config.to_dict(),
            "pretrained": False,
            "checkpoint_path": None,
        }
        self.hparams["metrics"] = [c.to_dict() for c in self.metrics.configs]
        self.hparams["logging_config"] = self.logging_config.to_dict()

        self.backbone = create_backbone(backbone_config)
        self.head = ClassificationHead(self.backbone.num_features, num_classes, head_dropout)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mixer = (
            BatchMixer(num_classes, mixup_alpha, cutmix_alpha, label_smoothing)
            if mixup_alpha > 0 or cutmix_alpha > 0
            else None
        )
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        if self.logging_config.log_confusion_matrix:
            from torchmetrics.classification import MulticlassConfusionMatrix

            self.val_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.last_confusion_matrix: torch.Tensor | None = None

    # ----------------------------------------------------------------- model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> class logits (N, num_classes)."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if self.hparams.freeze_backbone:
            # Linear probing: keep BatchNorm statistics and dropout of the frozen backbone fixed.
            self.backbone.eval()
        return self

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, target = batch[0], batch[1]
        if self.mixer is not None:
            mixed, soft_target = self.mixer(images, target)
            logits = self(mixed)
            # smoothing is already inside the soft targets
            loss = F.cross_entropy(logits, soft_target)
        else:
            logits = self(images)
            loss = self.criterion(logits, target)
        # train metrics compare against the original hard labels
        self._update_and_log_metrics("train", logits, target)
        # `train/loss` per step under its documented name, plus an epoch mean
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True)
        if self.logging_config.log_learning_rate:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", float(lr), on_step=True, on_epoch=False)
        if self.logging_config.log_weight_norm:
            self.log("train/weight_norm", _global_norm(self._trainable()), on_step=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits, target, loss = self._eval_step("val", batch)
        if self.logging_config.log_confusion_matrix:
            self.val_confusion.update(logits.argmax(dim=-1), target)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step("test", batch)[2]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (N, num_classes); `.argmax(-1)` gives class indices."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    def _eval_step(self, stage: str, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, target = batch[0], batch[1]
        logits = self(images)
        loss = self.criterion(logits, target)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self._update_and_log_metrics(stage, logits, target)
        return logits, target, loss

    def _update_and_log_metrics(self, stage: str, logits: torch.Tensor, target: torch.Tensor):
        self.metrics.update(stage, logits, target)
        for name, metric in self.metrics.get(stage).items():
            config = self.metrics.config(name)
            # Logging the Metric object lets Lightning compute/reset it per epoch
            # without a host sync per step.
            self.log(
                f"{stage}/{name}",
                metric,
                on_step=config.log_on_step,
                on_epoch=config.log_on_epoch,
                prog_bar=config.prog_bar,
            )

    # ----------------------------------------------------------------- diagnostics
    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.logging_config.log_gradient_norm:
            grads = [p.grad for p in self._trainable() if p.grad is not None]
            if grads:
                self.log("train/grad_norm", _global_norm(grads), on_step=True)

    def on_validation_epoch_end(self) -> None:
        if not self.logging_config.log_confusion_matrix:
            return
        matrix = self.val_confusion.compute()
        self.val_confusion.reset()
        if self.trainer.sanity_checking:
            return
        self.last_confusion_matrix = matrix.cpu()
        from autotimm.confusion import log_confusion_matrix

        log_confusion_matrix(
            self.loggers, self.last_confusion_matrix, self.hparams.class_names, self.global_step
        )

    # ----------------------------------------------------------------- optimization
    def configure_optimizers(self) -> Any:
        optimizer = create_optimizer(
            self,
            self.hparams.optimizer,
            self.hparams.lr,
            self.hparams.weight_decay,
            self.hparams.optimizer_kwargs,
        )
        scheduler = create_scheduler(
            self.hparams.scheduler,
            optimizer,
            self._training_length(),
            self.hparams.scheduler_kwargs,
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _training_length(self) -> TrainingLength:
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError(
                "configure_optimizers needs a Trainer (schedulers are sized from the run "
                "length); call it through Trainer.fit."
            )
        total = int(trainer.estimated_stepping_batches)
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            steps_per_epoch = max(1, total)
        else:
            steps_per_epoch = max(1, total // max_epochs)
        return TrainingLength(total, max_epochs, steps_per_epoch)

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        # timm schedulers are not torch LRSchedulers: they take the epoch or update count.
        from timm.scheduler.scheduler import Scheduler as TimmScheduler

        if isinstance(scheduler, TimmScheduler):
            if scheduler.t_in_epochs:
                scheduler.step(epoch=self.current_epoch + 1, metric=metric)
            else:
                scheduler.step_update(num_updates=self.global_step, metric=metric)
        elif metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all tensors together, one fused kernel per dtype/device group."""
    norms = torch._foreach_norm([t.detach() for t in tensors])
    return torch.linalg.vector_norm(torch.stack(norms))
