"""Training recipes as ImageClassifier options: EMA, staged unfreezing, layer-wise lr decay,
the mixup schedule and class weights. Their checks, callbacks, loss and lr scales.

Each is off by default. The run checks its config keys up front (`check_run_recipes`,
from `validate_groups`); ImageClassifier checks its arguments with the same function.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from autotimm.checks import ConfigValueError, check_positive, under


def _int_at_least(key: str, value: Any, low: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigValueError(key, value, f"must be an integer >= {low}{note}")


def check_model_recipes(
    ema_decay: Any, freeze_backbone_epochs: Any, class_weights: Any = None, mixes: bool = False
) -> None:
    """ImageClassifier's recipe arguments (errors name the argument and the bad value); layer
    decay and the backbone's lr factor are the optimizer's (autotimm.optim.config)."""
    if ema_decay is not None:
        check_positive("ema_decay", ema_decay)
        if not ema_decay < 1:
            raise ConfigValueError(
                "ema_decay", ema_decay, "must be in (0, 1), e.g. 0.9998 (null: off)"
            )
    _int_at_least("freeze_backbone_epochs", freeze_backbone_epochs, 0, " (0: off)")
    if class_weights is not None and mixes:
        # mixed (soft) targets take the unweighted loss: the weights would be ignored
        raise ConfigValueError(
            "class_weights",
            class_weights,
            "does not work with mixup/cutmix; use data.sampler=balanced instead",
        )


def check_run_recipes(cfg: DictConfig) -> None:
    """The run's recipe keys under model and data, before any data loads."""
    from autotimm.data.imbalance import check_imbalance_options

    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    reg = cfg.get("regularization") or {}
    mixes = bool(reg.get("mixup_alpha", 0) or reg.get("cutmix_alpha", 0))
    with under("data"):
        check_imbalance_options(data.get("class_weights"), data.get("sampler"))
    with under("model"):
        check_model_recipes(model.get("ema_decay"), model.get("freeze_backbone_epochs", 0))
    backbone = cfg.get("backbone") or {}
    weights = backbone.get("checkpoint_path") or backbone.get("pretrained")
    if model.get("freeze_backbone_epochs", 0) and not weights:
        # a frozen random backbone teaches the head nothing (experiment=finetune lands here)
        raise ConfigValueError(
            "model.freeze_backbone_epochs",
            model.get("freeze_backbone_epochs"),
            "staged unfreezing starts from weights: set backbone.checkpoint_path=<file> "
            "(an autotimm checkpoint or a timm state dict) or backbone.pretrained=true",
        )
    _check_unfreezing_strategy(cfg)
    if data.get("class_weights") is not None and mixes:
        check_model_recipes(None, 0, class_weights=data.get("class_weights"), mixes=True)


def _check_unfreezing_strategy(cfg: DictConfig) -> None:
    """DDP keeps every parameter that required a gradient when it wrapped the model: a
    backbone frozen afterwards stops it at the first step unless it looks for unused ones."""
    epochs = (cfg.get("model") or {}).get("freeze_backbone_epochs", 0)
    strategy = str((cfg.get("trainer") or {}).get("strategy", "auto"))
    if epochs and "ddp" in strategy and "find_unused_parameters_true" not in strategy:
        raise ConfigValueError(
            "trainer.strategy",
            strategy,
            "staged unfreezing (model.freeze_backbone_epochs) under DDP needs "
            "trainer.strategy=ddp_find_unused_parameters_true",
        )


def recipe_callbacks(hp: Any) -> list[Any]:
    """The callbacks ImageClassifier's hparams ask for (LightningModule.configure_callbacks)."""
    callbacks: list[Any] = []
    if hp.get("ema_decay") is not None:
        from autotimm.model.ema import EmaWeights

        callbacks.append(EmaWeights(hp.ema_decay))
    if hp.get("freeze_backbone_epochs"):
        from autotimm.model.finetune import StagedUnfreezing

        callbacks.append(StagedUnfreezing(hp.freeze_backbone_epochs))
    if hp.get("mixup_off_epoch") is not None:
        from autotimm.model.regularization import MixupOff

        callbacks.append(MixupOff(hp.mixup_off_epoch))
    return callbacks


def optimizer_scales(hp: Any) -> dict[str, Any]:
    """create_optimizer's lr scales: layer decay, and the backbone's factor when unfreezing."""
    staged = bool(hp.get("freeze_backbone_epochs"))
    return {
        "layer_decay": hp.get("layer_decay"),
        "backbone_lr_scale": float(hp.get("backbone_lr_scale", 0.1)) if staged else 1.0,
    }


def criterion(hp: Any) -> Any:
    """Cross-entropy with the label smoothing and the class weights of the hparams."""
    import torch
    import torch.nn as nn

    weights = hp.get("class_weights")
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=hp.label_smoothing)
