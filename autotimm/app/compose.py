"""Compose a run's objects from the config: model, callbacks, trainer (loggers: run_loggers).

`autotimm.app.run.train` calls these in order; benchmarks reuse them to build the same
objects a run uses.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autotimm.user_errors import UserError

log = logging.getLogger(__name__)


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (null entries skipped)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def uses_cuda(cfg: DictConfig) -> bool:
    """True when the run's trainer will put the model on a CUDA device."""
    import torch

    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto")).lower()
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def prepare_model(model: Any, cfg: DictConfig) -> Any:
    """Fast defaults before fitting: channels_last weights on CUDA, optional torch.compile.

    Compiling is in place (``model.compile``), so state_dict keys carry no ``_orig_mod.``
    prefix and checkpoints load into compiled and uncompiled models alike.
    """
    import torch

    if cfg.get("channels_last", True) and uses_cuda(cfg):
        model = model.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        model.compile(mode=cfg.get("compile_mode", "default"))
    return model


def num_classes_of(cfg: DictConfig, datamodule: Any) -> int:
    """The data's class count (loads the data), checked against `model.num_classes`."""
    from_data = datamodule.num_classes
    wanted = cfg.model.get("num_classes")
    if wanted is not None and int(wanted) != from_data:
        raise UserError(
            f"model.num_classes={wanted} but the data has {from_data} classes "
            "(leave it null to take the number from the data)"
        )
    return from_data


def check_same_task(cfg: DictConfig, datamodule: Any) -> None:
    """The model is multi-label exactly when the data is (model.multi_label follows
    data.multi_label unless overridden)."""
    data = bool(getattr(datamodule, "multi_label", False))
    model = cfg.model.get("multi_label", False)
    if model is not None and bool(model) != data:
        raise UserError(
            f"model.multi_label={model} but data.multi_label={data}: the model needs the "
            "data's kind of targets; set data.multi_label (model.multi_label follows it)"
        )


def build_model(cfg: DictConfig, datamodule: Any, groups: dict[str, Any] | None = None) -> Any:
    """The ImageClassifier of the composed groups, sized to the data, prepared for speed.

    `groups`: the group nodes already built (and checked) by `validate_groups`; the model
    gets those instead of building (and checking) each node a second time."""
    from hydra.utils import instantiate

    from autotimm.data.imbalance import loss_class_weights

    num_classes = num_classes_of(cfg, datamodule)
    check_same_task(cfg, datamodule)
    # data.class_weights=auto: inverse class frequencies of the loaded training split
    weights = loss_class_weights(cfg.data.get("class_weights"), datamodule)
    built = {k: v for k, v in (groups or {}).items() if k in cfg.model}
    node = cfg.model
    if built:  # Hydra would merge objects given to instantiate into the config: pass them on
        node = OmegaConf.to_container(cfg.model, resolve=True)
        node = {k: v for k, v in node.items() if k not in built}
    model_class = instantiate(node, _partial_=True)
    model = model_class(
        num_classes=num_classes,
        class_names=datamodule.class_names,
        **({"class_weights": weights} if weights is not None else {}),
        **built,
    )
    return prepare_model(model, cfg)


def build_callbacks(cfg: DictConfig, *always: Any) -> list[Any]:
    """The callbacks group, plus the ones every run has (NaN guard, `always`)."""
    from autotimm.training.callbacks import NonFiniteLossGuard

    callbacks = instantiate_each(cfg.get("callbacks"))
    if not cfg.get("trainer", {}).get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false switches the bar off; Lightning refuses a bar
        # callback with it, so the callbacks group's bar is left out
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # NaN/inf loss: the run (or sweep trial) fails early instead of training on garbage
    return [*callbacks, *always, NonFiniteLossGuard()]


def build_trainer(
    cfg: DictConfig, callbacks: list[Any], loggers: list[Any] | bool, **overrides: Any
) -> Any:
    """The trainer node's Trainer (`overrides`: Trainer arguments that replace the node's).

    With no profiler configured it gets autotimm's QuietProfiler (Lightning's default,
    records nothing, minus its per-hook cost); `trainer.barebones` runs take no profiler."""
    from hydra.utils import instantiate

    quiet = not cfg.trainer.get("barebones") and not overrides.get("barebones")
    if quiet and cfg.trainer.get("profiler") is None and "profiler" not in overrides:
        from autotimm.training.profiler import QuietProfiler

        overrides["profiler"] = QuietProfiler()
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def tune_batch_size(trainer: Any, model: Any, datamodule: Any) -> int:
    """Set ``datamodule.batch_size`` to the largest power of two (from the configured one)
    that trains without running out of memory (Lightning's batch-size finder, a few steps
    per size, model and trainer restored afterwards)."""
    from lightning.pytorch.tuner import Tuner

    found = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="power", init_val=int(datamodule.batch_size)
    )
    log.info("batch size finder: training with batch size %s", datamodule.batch_size)
    return int(found or datamodule.batch_size)
