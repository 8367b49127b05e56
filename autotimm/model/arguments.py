"""ImageClassifier's arguments: checked once, from either form, into plain hparams.

ImageClassifier takes the optimizer, scheduler and regularization as its documented keyword
arguments or as the library types the config groups build (`OptimizerConfig`,
`SchedulerConfig`, `RegularizationConfig`). `checked_arguments` turns the keyword form into
those types (each checks itself when built; a config passed in was checked when it was
built and is not checked again), checks the optimizer/scheduler pair and the rest, and
returns the hparams checkpoints keep: plain values in the flat keyword form, so every
checkpoint loads with `ImageClassifier.load_from_checkpoint` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from autotimm.checks import ConfigValueError, renamed, under
from autotimm.metrics.manager import MetricManager
from autotimm.model.backbone import BackboneConfig, as_backbone_config
from autotimm.model.logging_config import LoggingConfig
from autotimm.model.multilabel import check_multi_label_model
from autotimm.model.recipes import check_model_recipes
from autotimm.model.regularization import RegularizationConfig
from autotimm.optim.config import OptimizerConfig, SchedulerConfig
from autotimm.utils import to_plain

# keyword argument -> the field of the config type that holds it
OPTIMIZER_FIELDS = {
    "optimizer": "name",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "optimizer_kwargs": "kwargs",
    "layer_decay": "layer_decay",
    "backbone_lr_scale": "backbone_lr_scale",
}
SCHEDULER_FIELDS = {"scheduler": "name", "scheduler_kwargs": "kwargs"}
REGULARIZATION_FIELDS = {
    name: name
    for name in RegularizationConfig.__dataclass_fields__
    if name != "drop_path_rate"  # the backbone's argument
}


@dataclass
class CheckedArguments:
    """What ImageClassifier builds itself from."""

    hparams: dict[str, Any]  # plain, the flat keyword form (save_hyperparameters)
    backbone: BackboneConfig
    logging: LoggingConfig
    metrics: MetricManager


def checked_arguments(given: dict[str, Any], defaults: dict[str, Any]) -> CheckedArguments:
    """Check ImageClassifier's arguments (`given`: its `locals()`, `defaults`: its signature's);
    every error names the argument and the bad value."""
    args = {k: to_plain(v) for k, v in given.items() if k in defaults}
    num_classes, multi_label = args["num_classes"], args["multi_label"]
    class_names = _checked_class_names(num_classes, args["class_names"])
    regularization = _config(args, defaults, "regularization", RegularizationConfig)
    check_multi_label_model(
        multi_label, args["label_threshold"], num_classes, args["class_weights"]
    )
    mixes = regularization.mixup_alpha > 0 or regularization.cutmix_alpha > 0
    check_model_recipes(
        args["ema_decay"], args["freeze_backbone_epochs"], args["class_weights"], mixes
    )
    optimizer = _config(args, defaults, "optimizer", OptimizerConfig)
    scheduler = _config(args, defaults, "scheduler", SchedulerConfig, optimizer=optimizer)
    with renamed(_renames(SCHEDULER_FIELDS)):
        scheduler.check_with(optimizer)  # nothing to do when built with it
    with under("backbone"):
        backbone = _with_drop_path(as_backbone_config(args["backbone"]), regularization)
    logging = LoggingConfig.coerce(args["logging_config"])
    with under("metrics"):
        metrics = MetricManager.for_model(
            args["metrics"], num_classes, multi_label, args["label_threshold"]
        )
    hparams = {
        **{k: v for k, v in args.items() if k != "regularization"},
        **_as_arguments(optimizer, OPTIMIZER_FIELDS),
        **_as_arguments(scheduler, SCHEDULER_FIELDS),
        **_as_arguments(regularization, REGULARIZATION_FIELDS),
        "backbone": backbone.to_dict(),
        "metrics": [c.to_dict() for c in metrics.configs],
        "logging_config": logging.to_dict(),
        "class_names": class_names,
    }
    return CheckedArguments(hparams, backbone, logging, metrics)


_FIELDS = {
    "optimizer": OPTIMIZER_FIELDS,
    "scheduler": SCHEDULER_FIELDS,
    "regularization": REGULARIZATION_FIELDS,
}


def _config(
    args: dict[str, Any], defaults: dict[str, Any], holder: str, kind: type, **extra: Any
) -> Any:
    """The config `holder` names: the one passed in, or one built from the keyword arguments
    and `extra` (its errors renamed to those arguments)."""
    fields = _FIELDS[holder]
    if isinstance(args[holder], kind):
        _not_given_twice(args, defaults, holder, fields)
        return args[holder]
    values = {field: args[argument] for argument, field in fields.items()}
    if holder == "regularization" and args[holder] is not None:
        raise ConfigValueError(
            holder, args[holder], "accepted: a RegularizationConfig or None (the keywords)"
        )
    with renamed(_renames(fields)):
        values = {k: {} if k == "kwargs" and v is None else v for k, v in values.items()}
        return kind(**values, **extra)


def _renames(fields: dict[str, str]) -> dict[str, str]:
    return {field: argument for argument, field in fields.items() if field != argument}


def _not_given_twice(
    args: dict[str, Any], defaults: dict[str, Any], holder: str, fields: dict[str, str]
) -> None:
    """A keyword the config passed as `holder` also holds must keep its default."""
    for argument in fields:
        if argument == holder:
            continue
        value, default = args[argument], defaults[argument]
        if value != default and not (value in (None, {}) and default in (None, {})):
            raise ConfigValueError(
                argument,
                value,
                f"given twice: the {type(args[holder]).__name__} passed as {holder} holds "
                f"{fields[argument]}; set it there",
            )


def _as_arguments(config: Any, fields: dict[str, str]) -> dict[str, Any]:
    """The config's fields under their keyword names (empty kwargs kept as None)."""
    values = {argument: getattr(config, field) for argument, field in fields.items()}
    for argument, field in fields.items():
        if field == "kwargs":
            values[argument] = values[argument] or None
    return values


def _with_drop_path(
    backbone: BackboneConfig, regularization: RegularizationConfig
) -> BackboneConfig:
    """The regularization's stochastic depth on a backbone that sets none itself (a
    backbone's own non-zero `drop_path_rate` wins)."""
    rate = regularization.drop_path_rate
    if not rate or backbone.drop_path_rate:
        return backbone
    return replace(backbone, drop_path_rate=rate)


def _checked_class_names(num_classes: int, class_names: list[str] | None) -> list[str] | None:
    """num_classes is a positive integer; class_names (plain list), one per class."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigValueError("num_classes", num_classes, "must be an integer >= 1")
    if class_names is None:
        return None
    class_names = list(class_names)
    if len(class_names) != num_classes:
        raise ConfigValueError(
            "class_names", class_names, f"has {len(class_names)} entries, num_classes={num_classes}"
        )
    return class_names
