"""`validate_groups`, which builds every group node before any data loads, and the metrics
group's node (`metric_list`).

Each group file in `conf/` instantiates into a library type that checks itself once, when
built: `autotimm.BackboneConfig`, `autotimm.OptimizerConfig`, `autotimm.SchedulerConfig`,
`autotimm.RegularizationConfig`, a list of `autotimm.MetricConfig`. A bad value fails when
its own node is built, with the group's key in the message (`optimizer.lr=-0.1: must be >
0`). The built groups are what the model node's `ImageClassifier` receives
(autotimm.app.compose.build_model): nothing is checked or built twice.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from autotimm.checks import ConfigValueError, under
from autotimm.user_errors import UserError
from autotimm.utils import to_plain

# the groups whose nodes validate_groups builds, in this order: regularization before
# backbone, whose drop_path_rate interpolates regularization's (the user's key is named)
GROUPS = ("optimizer", "scheduler", "regularization", "backbone", "metrics")
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


def validate_groups(cfg: DictConfig) -> dict[str, Any]:
    """Build each group node of `cfg` on its own (then check the optimizer and scheduler
    together): a bad value raises a ConfigValueError naming `group.key=value`. Returns the
    built groups by name, for the model (`autotimm.app.compose.build_model`).

    Call it before the data is instantiated; Hydra's InstantiationException is unwrapped
    so the message is the short one.
    """
    from autotimm.model.recipes import check_run_recipes
    from autotimm.records.objectives import objective_specs

    objective_specs(cfg.get("optimized_metric"), cfg.get("optimized_mode", "max"))
    built: dict[str, Any] = {}
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            with under(group):
                built[group] = _instantiate(node, group, built.get("optimizer"))
    check_run_recipes(cfg)  # model.ema_decay, model.freeze_backbone_epochs, data.sampler, ...
    return built


def _instantiate(node: DictConfig, group: str, optimizer: Any = None) -> Any:
    """Build the node; a SchedulerConfig on the optimizer built before it (the pair is
    checked there, once). Errors are the short ones: Hydra's InstantiationException is
    unwrapped, a key the target does not take lists the accepted ones."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from autotimm.optim.config import OptimizerConfig, SchedulerConfig

    try:
        build = instantiate(node, _partial_=True)
    except InstantiationException as exc:  # e.g. a _target_ that cannot be imported
        cause = exc.__cause__
        raise (ValueError(f"{group}: {cause}") if cause else exc) from cause
    pair = build.func is SchedulerConfig and isinstance(optimizer, OptimizerConfig)
    try:
        return build(optimizer=optimizer) if pair else build()
    except ConfigValueError:
        raise
    except TypeError as exc:
        raise _unknown_key(node, group, exc) from exc
    except ValueError as exc:
        raise UserError(f"{group}: {exc}") from exc


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
