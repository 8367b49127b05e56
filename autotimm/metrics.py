"""Metric configuration and the manager that builds one metric instance per stage."""

from __future__ import annotations

import inspect
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from autotimm.checks import ConfigValueError, check_choice, close_matches
from autotimm.utils import import_object, to_plain

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
BACKENDS = ("torchmetrics", "custom")
PREDS_TYPES = ("probs", "logits", "labels")


@dataclass
class MetricConfig:
    """One metric: which class, its parameters, the stages it runs in and how it is logged.

    `backend="torchmetrics"` looks `metric_class` up in `torchmetrics` and
    `torchmetrics.classification`; `backend="custom"` imports a dotted path.
    `num_classes` (and `task="multiclass"`) are filled in when the class takes them.
    `preds` chooses what the metric receives: class probabilities (default; works for
    every torchmetrics classification metric, including AUROC and calibration error),
    raw logits, or predicted class indices.

    Logged keys: `{stage}/{name}` is the epoch value (`log_on_epoch`); with
    `log_on_step` the per-batch value is logged as `{stage}/{name}_step` (or as
    `{stage}/{name}` when `log_on_epoch=False`).
    """

    name: str
    metric_class: str
    backend: Literal["torchmetrics", "custom"] = "torchmetrics"
    params: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    prog_bar: bool = False
    log_on_step: bool = False
    log_on_epoch: bool = True
    preds: Literal["probs", "logits", "labels"] = "probs"

    def __post_init__(self) -> None:
        self.params = dict(to_plain(self.params) or {})
        self.stages = list(to_plain(self.stages))
        key = self.name
        check_choice(f"{key}.backend", self.backend, BACKENDS)
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ConfigValueError(
                f"{key}.stages",
                self.stages,
                f"unknown stage; accepted: a non-empty list of {list(STAGES)}",
            )
        if not (self.log_on_step or self.log_on_epoch):
            raise ConfigValueError(
                f"{key}.log_on_epoch",
                self.log_on_epoch,
                "log_on_step is False too, so it would never be logged; set one to True",
            )
        check_choice(f"{key}.preds", self.preds, PREDS_TYPES)
        self.resolve_class()  # an unknown class fails here, not when the model is built

    def resolve_class(self) -> type:
        """The metric class: a torchmetrics name, or a dotted path with backend='custom'."""
        key = f"{self.name}.metric_class"
        if self.backend == "custom":
            try:
                return import_object(self.metric_class)
            except ValueError as exc:
                reason = exc.__cause__ or exc
                raise ConfigValueError(
                    key,
                    self.metric_class,
                    f"cannot be imported ({reason}); accepted: a dotted "
                    "path 'package.module.Class' (or backend='torchmetrics' with a class name)",
                ) from exc
        import torchmetrics
        import torchmetrics.classification as tmc

        for namespace in (torchmetrics, tmc):
            cls = getattr(namespace, self.metric_class, None)
            if isinstance(cls, type):
                return cls
        names = {n for space in (torchmetrics, tmc) for n in dir(space) if n[:1].isupper()}
        raise ConfigValueError(
            key,
            self.metric_class,
            "not in torchmetrics or torchmetrics.classification"
            f"{close_matches(self.metric_class, sorted(names))}; accepted: a class of those, "
            "or backend='custom' with a dotted path",
        )

    def build(self, num_classes: int) -> nn.Module:
        """The metric for `num_classes` classes (num_classes/task filled in when it takes them)."""
        cls = self.resolve_class()
        params = dict(self.params)
        accepted = _accepted_params(cls)
        if "num_classes" in accepted:
            params.setdefault("num_classes", num_classes)
        if "task" in accepted:
            params.setdefault("task", "multiclass")
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigValueError(
                f"{self.name}.params",
                self.params,
                f"{self.metric_class}(**{params}) failed: {exc}; "
                f"accepted: {sorted(accepted - _NOT_PARAMS)}",
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NOT_PARAMS = {"self", "cls", "args", "kwargs"}


def _accepted_params(cls: type) -> set[str]:
    """Keyword names a metric class takes (torchmetrics task wrappers use __new__)."""
    names: set[str] = set()
    for fn in (getattr(cls, "__new__", None), cls.__init__):
        try:
            names |= set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            continue
    return names


def as_metric_config(value: MetricConfig | dict[str, Any]) -> MetricConfig:
    if isinstance(value, MetricConfig):
        return value
    value = to_plain(value)
    if isinstance(value, dict):
        fields = {k: v for k, v in value.items() if k != "_target_"}
        accepted = list(MetricConfig.__dataclass_fields__)
        unknown = sorted(set(fields) - set(accepted))
        missing = [k for k in ("name", "metric_class") if k not in fields]
        if unknown or missing:
            raise ConfigValueError(
                str(fields.get("name", "metric")),
                value,
                f"unknown keys {unknown}, missing {missing}; accepted keys: {accepted}",
            )
        return MetricConfig(**fields)
    raise ValueError(f"Expected a MetricConfig or dict, got {value!r}")


class MetricManager(nn.Module):
    """Owns separate metric instances for train, val and test.

    `manager.get("val")` (or `manager.val_metrics`) is a ModuleDict name -> metric;
    `manager.configs` keeps the configs. Registered as a submodule, so metrics
    follow the model's device.
    """

    def __init__(
        self, configs: list[MetricConfig] | list[dict[str, Any]], num_classes: int
    ) -> None:
        super().__init__()
        configs = [as_metric_config(c) for c in to_plain(configs)]
        # top-k accuracy with k >= num_classes is always 1: one metric set (with top-5)
        # then serves any data set, and the metric is left out where it means nothing
        self.configs = [c for c in configs if c.params.get("top_k", 1) < max(num_classes, 2)]
        for skipped in (c for c in configs if c not in self.configs):
            log.info("metric %r left out: top_k >= num_classes=%d", skipped.name, num_classes)
        names = [c.name for c in self.configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Metric names must be unique; repeated: {duplicates}")
        self._by_name = {c.name: c for c in self.configs}
        self.num_classes = num_classes
        # One ModuleDict per stage (`train_metrics`, ...): separate state per stage.
        for stage in STAGES:
            built = {c.name: c.build(num_classes) for c in self.configs if stage in c.stages}
            setattr(self, f"{stage}_metrics", nn.ModuleDict(built))

    def get(self, stage: str) -> nn.ModuleDict:
        return getattr(self, f"{stage}_metrics")

    def config(self, name: str) -> MetricConfig:
        return self._by_name[name]

    def update(
        self, stage: str, logits: torch.Tensor, target: torch.Tensor, step_values: bool = True
    ) -> dict[str, torch.Tensor]:
        """Feed one batch to every metric of `stage` in the form each expects.

        With `step_values`, returns the batch values of the metrics configured with
        `log_on_step` (those run the metric's forward, which also accumulates the epoch
        state); without, every metric only accumulates (cheaper: no per-batch compute).
        """
        metrics = self.get(stage)
        if not len(metrics):
            return {}
        detached = logits.detach()
        inputs: dict[str, torch.Tensor] = {}
        values: dict[str, torch.Tensor] = {}
        for name, metric in metrics.items():
            config = self.config(name)
            if config.preds not in inputs:
                inputs[config.preds] = _as_preds(detached, config.preds)
            if step_values and config.log_on_step:
                values[name] = metric(inputs[config.preds], target)
            else:
                metric.update(inputs[config.preds], target)
        return values


def _as_preds(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "probs":
        return logits.float().softmax(dim=-1)
    if kind == "labels":
        return logits.argmax(dim=-1)
    return logits
