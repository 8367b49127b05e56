"""ImageClassifier: timm backbone + ClassificationHead + metrics + optimizer/scheduler."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch

from autotimm.metrics.manager import MetricConfig, MetricManager
from autotimm.metrics.stage_logs import StageLogs, is_logging_step
from autotimm.model import recipes
from autotimm.model.arguments import checked_arguments
from autotimm.model.backbone import BackboneConfig, create_backbone, output_features
from autotimm.model.heads import ClassificationHead
from autotimm.model.logging_config import LoggingConfig
from autotimm.model.multilabel import (
    MultiLabelLoss,
    labels_over_threshold,
    output_probabilities,
    soft_target_loss,
    thresholds,
)
from autotimm.model.regularization import BatchMixer, RegularizationConfig
from autotimm.optim.config import OptimizerConfig, SchedulerConfig
from autotimm.optim.factory import create_optimizer, create_scheduler
from autotimm.optim.scheduling import step_scheduler, training_length
from autotimm.private_apis import CURRENT_FX_NAME, TRAINER, foreach_norm


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
        scheduler_kwargs: extra scheduler keyword arguments, plus `warmup_epochs`
            (linear warm-up), `interval` ('step'/'epoch') and, for plateau, `monitor`.
        head_dropout: dropout before the classifier layer.
        label_smoothing: label smoothing factor in [0, 1).
        freeze_backbone: train only the head; the backbone stays in eval mode.
        mixup_alpha: Mixup alpha (training only; 0 disables).
        cutmix_alpha: CutMix alpha (training only; 0 disables).
        class_names: optional class names, saved in checkpoints for prediction.
        ema_decay / freeze_backbone_epochs / backbone_lr_scale / layer_decay /
        class_weights / mixup_prob / mixup_switch_prob / mixup_mode / mixup_off_epoch:
            the training recipes, all off by default (see `autotimm.model.recipes`).
        multi_label / label_threshold: several labels per image, each predicted at probability
            >= its threshold (one number or one per label); see `autotimm.model.multilabel`.
        regularization: a RegularizationConfig instead of label_smoothing, mixup_alpha,
            cutmix_alpha, head_dropout and the mixup_* keywords (its drop_path_rate goes to
            a backbone that sets none).

    `optimizer` may be an OptimizerConfig (then it holds lr, weight_decay, the kwargs,
    layer_decay and backbone_lr_scale) and `scheduler` a SchedulerConfig (its kwargs): the
    types the config groups build, checked when they were built.
    """

    def __init__(
        self,
        backbone: str | BackboneConfig,
        num_classes: int,
        metrics: MetricManager | list[MetricConfig],
        logging_config: LoggingConfig | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str | dict | OptimizerConfig = "adamw",
        optimizer_kwargs: dict | None = None,
        scheduler: str | dict | SchedulerConfig | None = "cosine",
        scheduler_kwargs: dict | None = None,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        class_names: list[str] | None = None,
        ema_decay: float | None = None,
        freeze_backbone_epochs: int = 0,
        backbone_lr_scale: float = 0.1,
        layer_decay: float | None = None,
        class_weights: list[float] | None = None,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        mixup_off_epoch: int | None = None,
        multi_label: bool = False,
        label_threshold: float | list[float] = 0.5,
        regularization: RegularizationConfig | None = None,
    ) -> None:
        super().__init__()
        # everything checked before anything is built: errors name the bad value
        checked = checked_arguments(locals(), _init_defaults())
        self.logging_config, self.metrics = checked.logging, checked.metrics
        self.stage_logs = StageLogs(self.metrics)
        # Plain values in the keyword form, not the arguments as given (configs, a
        # MetricManager): checkpoints load with weights_only and rebuild from them alone.
        # Loggers get the run's config instead (see also on_save_checkpoint).
        self.save_hyperparameters(checked.hparams, logger=False)
        self._build_modules(checked.backbone)

    def _build_modules(self, backbone_config: BackboneConfig) -> None:
        """Backbone, head, loss, mixer and confusion matrix, from the saved hparams."""
        hp = self.hparams
        self.freeze_backbone = bool(hp.freeze_backbone)
        self.backbone = create_backbone(backbone_config)
        self.head = ClassificationHead(
            output_features(self.backbone), hp.num_classes, hp.head_dropout
        )
        self.multi_label = bool(hp.get("multi_label", False))
        # label smoothing, class weights; multi-label: BCE with smoothing towards 0.5
        multi = self.multi_label
        self.criterion = MultiLabelLoss(hp.label_smoothing) if multi else recipes.criterion(hp)
        self.mixer = BatchMixer.from_hparams(hp)  # None without mixup/cutmix
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        # one matrix per label would not fit the figure: multi-label runs draw none
        if self.logging_config.log_confusion_matrix and not self.multi_label:
            from torchmetrics.classification import MulticlassConfusionMatrix

            self.val_confusion = MulticlassConfusionMatrix(num_classes=hp.num_classes)
        self.last_confusion_matrix: torch.Tensor | None = None

    # Lightning sets `_current_fx_name` around every hook (about 45 times a training step)
    # and the step sets `_log_step`: plain values, which nn.Module.__setattr__ checks
    # against its parameters, buffers and submodules first (about 1 us apiece).
    _PLAIN_ATTRIBUTES = frozenset({CURRENT_FX_NAME, "_log_step"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ImageClassifier._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ----------------------------------------------------------------- model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> class logits (N, num_classes)."""
        if x.dtype == torch.uint8:  # e.g. a DataLoader over a datamodule loader's .dataset
            raise TypeError(
                "ImageClassifier got uint8 images (N, C, H, W); it takes normalised float "
                "images. ImageDataModule's loaders normalise whole batches in their "
                "collate_fn: use `dm.val_dataset` (normalised), or that loader's collate_fn"
            )
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if getattr(self, "freeze_backbone", False):
            # Linear probing: keep BatchNorm statistics and dropout of the frozen backbone fixed.
            self.backbone.eval()
        return self

    # ----------------------------------------------------------------- steps
    # Per step: metric updates and a device-side loss sum. `self.log` (about 1 ms of Python
    # each) only on the steps the loggers write and once per epoch (autotimm.metrics.stage_logs).
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, target = batch[0], batch[1]
        if self.mixer is not None:
            mixed, soft_target = self.mixer(images, target)
            logits = self(mixed)
            # smoothing is already inside the soft targets
            loss = soft_target_loss(logits, soft_target, self.multi_label)
        else:
            logits = self(images)
            loss = self.criterion(logits, target)
        trainer = getattr(self, TRAINER)  # the attached Trainer, without the property's checks
        self._log_step = log_step = is_logging_step(trainer, batch_idx)
        # train metrics compare against the original hard labels
        self.stage_logs.step(self, "train", logits, target, loss, log_step)
        if log_step and self.logging_config.log_learning_rate:
            # Not Lightning's LearningRateMonitor: it names the values lr-AdamW/pg1, /pg2, ...
            # (never `train/lr` with two weight-decay groups) and needs a logger; 2.7 us every
            # step, 74 us a logging step (4.3 us a step on average) vs 0.1 us and 760 us, one
            # self.log (15 us on average) here (benchmarks/library_costs.py --clock cpu,
            # shared 2-core x86 CPU, 2026-12-07).
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.stage_logs.log_step_value(self, "train/lr", float(lr))
        if log_step and self.logging_config.log_weight_norm:
            norm = _global_norm(self._trainable())
            self.stage_logs.log_step_value(self, "train/weight_norm", norm)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits, target, loss = self._eval_step("val", batch)
        if hasattr(self, "val_confusion"):
            self.val_confusion.update(logits.argmax(dim=-1), target)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step("test", batch)[2]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (N, num_classes); `.argmax(-1)` gives class indices.
        Multi-label: one sigmoid probability per label (`predict_labels` thresholds them)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.predict_proba(images)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities, or per-label sigmoid ones for multi-label models."""
        return output_probabilities(self(images), self.multi_label)

    def predict_labels(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices (N,), or multi-label 0/1 rows (N, labels) at `label_threshold`."""
        probs = self.predict_proba(images)
        if not self.multi_label:
            return probs.argmax(dim=-1)
        threshold = thresholds(self.hparams.get("label_threshold", 0.5), probs.shape[-1])
        return labels_over_threshold(probs, threshold)

    # the original AutoTimm's attributes: name -> the metric instances the model updates
    @property
    def train_metrics(self) -> torch.nn.ModuleDict:
        return self.metrics.get_train_metrics()

    @property
    def val_metrics(self) -> torch.nn.ModuleDict:
        return self.metrics.get_val_metrics()

    @property
    def test_metrics(self) -> torch.nn.ModuleDict:
        return self.metrics.get_test_metrics()

    def _eval_step(self, stage: str, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, target = batch[0], batch[1]
        logits = self(images)
        loss = self.criterion(logits, target)
        # epoch values only (logged at the epoch's end, reduced across processes once)
        self.stage_logs.step(self, stage, logits, target, loss, log_step=False)
        return logits, target, loss

    def on_train_epoch_start(self) -> None:
        self.stage_logs.start_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self.stage_logs.start_epoch("val")

    def on_test_epoch_start(self) -> None:
        self.stage_logs.start_epoch("test")

    def on_train_epoch_end(self) -> None:
        # before checkpointing and early stopping, which Lightning calls after this hook
        self.stage_logs.end_epoch(self, "train")

    def on_test_epoch_end(self) -> None:
        self.stage_logs.end_epoch(self, "test")

    # ----------------------------------------------------------------- diagnostics
    def _trainable(self) -> list[torch.Tensor]:
        return [p for p in self.parameters() if p.requires_grad]

    def no_weight_decay(self) -> set[str]:
        """Backbone parameters timm keeps out of weight decay (e.g. ViT pos_embed)."""
        names = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{n}" for n in names}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.logging_config.log_gradient_norm and getattr(self, "_log_step", True):
            grads = [p.grad for p in self._trainable() if p.grad is not None]
            if grads:
                self.stage_logs.log_step_value(self, "train/grad_norm", _global_norm(grads))

    def on_validation_epoch_end(self) -> None:
        self.stage_logs.end_epoch(self, "val")
        if not hasattr(self, "val_confusion"):
            return
        matrix = self.val_confusion.compute()
        self.val_confusion.reset()
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        self.last_confusion_matrix = matrix.cpu()
        from autotimm.model.confusion import log_confusion_matrix

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
            allow_fused=self._fused_allowed(),
            **recipes.optimizer_scales(self.hparams),  # layer decay, backbone lr factor
        )
        scheduler_name = self.hparams.scheduler
        named = isinstance(scheduler_name, str) and scheduler_name.lower() != "none"
        scheduler = create_scheduler(
            self.hparams.scheduler,
            optimizer,
            training_length(getattr(self, TRAINER), scheduler_name) if named else None,
            self.hparams.scheduler_kwargs,
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _fused_allowed(self) -> bool:
        """Fused optimizers unscale inside step(): no gradient clipping, no fp16 GradScaler."""
        trainer = getattr(self, TRAINER)
        if trainer is None:
            return False
        return not trainer.gradient_clip_val and not str(trainer.precision).startswith("16")

    def configure_callbacks(self) -> list[L.Callback]:
        """The recipes' callbacks: EMA, staged unfreezing, mixup off from an epoch."""
        return recipes.recipe_callbacks(self.hparams)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The weights are in the state dict: rebuilding must not download or read files.
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY)
        if hparams is not None and isinstance(hparams.get("backbone"), dict):
            hparams["backbone"] = {
                **hparams["backbone"],
                "pretrained": False,
                "checkpoint_path": None,
            }

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        step_scheduler(scheduler, metric, self.current_epoch, self.global_step)


def _precompute_step_signatures() -> None:
    """Lightning reads a step method's signature on every batch (`inspect.getfullargspec`,
    about 10-20 us of Python a call): with `__signature__` set, inspect returns it as is.
    A subclass's own step methods are read the usual way."""
    for name in ("training_step", "validation_step", "test_step", "predict_step"):
        method = getattr(ImageClassifier, name)
        method.__signature__ = inspect.signature(method)


_precompute_step_signatures()


def _init_defaults() -> dict[str, Any]:
    """ImageClassifier's keyword arguments and their defaults (None for required ones)."""
    params = inspect.signature(ImageClassifier.__init__).parameters
    return {
        name: None if p.default is inspect.Parameter.empty else p.default
        for name, p in params.items()
        if name != "self"
    }


# Not lightning.pytorch.utilities.grad_norm: it returns one norm per parameter (63 keys for a
# resnet18), gathered with torch.tensor(list) (a device-to-host copy each on a GPU); 7.2 ms vs
# 7.0 ms a call here over resnet18's gradients, on logging steps only
# (benchmarks/library_costs.py --clock cpu, shared 2-core x86 CPU, 2026-12-07).
def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of all tensors together: fused per device/dtype group, no host sync."""
    tensors = [t.detach() for t in tensors]
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:  # torch >= 2.6
        return get_total_norm(tensors, norm_type=2.0)
    norms = foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
