"""Typed nodes for the optimizer, scheduler, regularization and metrics config groups,
and `validate_groups`, which builds every group node before any data loads.

Each group file in `conf/` instantiates into one of these (the backbone group into
`autotimm.BackboneConfig`), so a bad value fails when its own node is instantiated,
with the group's key in the message (`optimizer.lr=-0.1: must be > 0`). The model node
reads their fields through interpolation; ImageClassifier checks its arguments with the
same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from autotimm.checks import ConfigValueError, check_fraction, check_positive, under
from autotimm.utils import to_plain

# the groups whose nodes validate_groups builds, in this order: regularization before
# backbone, whose drop_path_rate interpolates regularization's (the user's key is named)
GROUPS = ("optimizer", "scheduler", "regularization", "backbone", "metrics")
# the optimizer and scheduler nodes' fields, as errors of the pair check name them
_PAIR_KEYS = dict(
    optimizer="optimizer.name",
    lr="optimizer.lr",
    weight_decay="optimizer.weight_decay",
    optimizer_kwargs="optimizer.kwargs",
    scheduler="scheduler.name",
    scheduler_kwargs="scheduler.kwargs",
)


@dataclass
class OptimizerConfig:
    """An optimizer from `list_optimizers()` (or {'class', 'params'}) with lr and weight decay;
    layer-wise lr decay (null: off) and the backbone's lr factor when unfreezing it."""

    name: str | dict[str, Any] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kwargs: dict[str, Any] = field(default_factory=dict)
    layer_decay: float | None = None
    backbone_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        from autotimm.model.recipes import check_layer_decay
        from autotimm.optim.check import ArgKeys, check_optimizer

        check_layer_decay(self.layer_decay)
        check_positive("backbone_lr_scale", self.backbone_lr_scale)

        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        keys = ArgKeys(optimizer="name", optimizer_kwargs="kwargs")
        check_optimizer(self.name, self.lr, self.weight_decay, self.kwargs, keys)


@dataclass
class SchedulerConfig:
    """A scheduler from `list_schedulers()` (or {'class', 'params'}) and its kwargs."""

    name: str | dict[str, Any] | None = "cosine"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from autotimm.optim.check import ArgKeys, check_scheduler

        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        check_scheduler(
            self.name, self.kwargs, keys=ArgKeys(scheduler="name", scheduler_kwargs="kwargs")
        )


@dataclass
class RegularizationConfig:
    """Label smoothing, mixup/cutmix (timm Mixup's prob, switch_prob, mode; the epoch it
    stops at), head dropout and stochastic depth, together."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    head_dropout: float = 0.0
    drop_path_rate: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    mixup_off_epoch: int | None = None

    def __post_init__(self) -> None:
        from autotimm.model.regularization import validate_mixup_schedule, validate_regularization

        validate_regularization(
            self.label_smoothing, self.mixup_alpha, self.cutmix_alpha, self.head_dropout
        )
        validate_mixup_schedule(
            self.mixup_prob, self.mixup_switch_prob, self.mixup_mode, self.mixup_off_epoch
        )
        check_fraction("drop_path_rate", self.drop_path_rate)


# the number of classes the metrics node builds its metrics for (the data's is not known
# yet); big enough for the usual top_k
_PROBE_CLASSES = 10


def metric_list(**metrics: Any) -> list[Any]:
    """The metrics group: `name: {MetricConfig fields}` entries -> a list of MetricConfig.

    Keeping metrics as a mapping in YAML lets users override one
    (`metrics.f1_macro.prog_bar=true`) or drop one (`~metrics.top5`). Each metric is
    built once here, so bad params fail before the data loads.
    """
    from autotimm.metrics.manager import as_metric_config

    configs = []
    for name, fields in metrics.items():
        if fields is not None:
            config = as_metric_config({"name": name, **(to_plain(fields) or {})})
            config.build(max(_PROBE_CLASSES, int(config.params.get("top_k", 1)) + 1))
            configs.append(config)
    return configs


def validate_groups(cfg: DictConfig) -> None:
    """Instantiate each group node of `cfg` on its own (then optimizer and scheduler
    together): a bad value raises a ConfigValueError naming `group.key=value`.

    Call it before the data is instantiated; Hydra's InstantiationException is unwrapped
    so the message is the short one.
    """
    from autotimm.model.recipes import check_run_recipes
    from autotimm.optim.check import ArgKeys, check_optimization
    from autotimm.records.objectives import objective_specs

    objective_specs(cfg.get("optimized_metric"), cfg.get("optimized_mode", "max"))
    built: dict[str, Any] = {}
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            with under(group):
                built[group] = _instantiate(node, group)
    optimizer, scheduler = built.get("optimizer"), built.get("scheduler")
    if isinstance(optimizer, OptimizerConfig) and isinstance(scheduler, SchedulerConfig):
        # each node was checked alone (the scheduler on a stand-in SGD); now the pair
        o, s = optimizer, scheduler
        keys = ArgKeys(**_PAIR_KEYS)
        check_optimization(o.name, o.lr, o.weight_decay, o.kwargs, s.name, s.kwargs, keys)
    check_run_recipes(cfg)  # model.ema_decay, model.freeze_backbone_epochs, data.sampler, ...


def _instantiate(node: DictConfig, group: str) -> Any:
    """instantiate(node), re-raising the error behind Hydra's InstantiationException."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigValueError):
            raise cause from None
        if isinstance(cause, TypeError):
            raise _unknown_key(node, group, cause) from cause
        if isinstance(cause, ValueError):
            raise ValueError(f"{group}: {cause}") from cause
        raise


def _unknown_key(node: DictConfig, group: str, cause: TypeError) -> ValueError:
    """A key the node's target does not take (`+optimizer.bogus=1`), with the accepted ones."""
    import inspect

    from hydra.utils import get_method

    try:
        accepted = list(inspect.signature(get_method(node._target_)).parameters)
    except Exception:  # no signature to compare with: Hydra's message it is
        return ValueError(f"{group}: {cause}")
    unknown = [k for k in node if not str(k).startswith("_") and k not in accepted]
    if not unknown:
        return ValueError(f"{group}: {cause}")
    return ConfigValueError(unknown[0], node[unknown[0]], f"unknown key; accepted: {accepted}")
