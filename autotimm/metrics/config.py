"""`MetricConfig`: one metric's class, parameters, stages and logging, checked when made;
`as_metric_config` turns a config node (a dict) into one.

What a config builds is the metric of one stage; `autotimm.metrics.manager` decides which
configs a model keeps and feeds their metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch.nn as nn

from autotimm.checks import ConfigValueError, check_choice, close_matches
from autotimm.metrics.checks import STAGES, check_text, checked_stages
from autotimm.metrics.inputs import accepted_params, multi_label_params
from autotimm.user_errors import UserError
from autotimm.utils import import_object, to_plain

BACKENDS = ("torchmetrics", "custom")
PREDS_TYPES = ("probs", "logits", "labels")


@dataclass
class MetricConfig:
    """One metric: which class, its parameters, the stages it runs in and how it is logged.

    `backend="torchmetrics"` looks `metric_class` up in `torchmetrics` and
    `torchmetrics.classification`; `backend="custom"` imports a dotted path.
    `backend` and `stages` take any letter case (stored lower-case).
    `num_classes` (and `task="multiclass"`) are filled in when the class takes them; in a
    multi-label MetricManager, `task="multilabel"` and `num_labels` instead.
    `preds` chooses what the metric receives: class probabilities (default; works for
    every torchmetrics classification metric, including AUROC and calibration error),
    raw logits, or predicted class indices (multi-label: sigmoid probabilities, or 0/1
    labels at the manager's threshold).

    Logged keys: `{stage}/{name}` is the epoch value (`log_on_epoch`); with
    `log_on_step` the per-batch value is logged as `{stage}/{name}_step` (or as
    `{stage}/{name}` when `log_on_epoch=False`).
    """

    # AutoTimm's positional order (name, backend, metric_class, params, stages); metric_class
    # has a default only so backend can keep its own: an empty one is refused
    name: str
    backend: Literal["torchmetrics", "custom"] = "torchmetrics"
    metric_class: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    prog_bar: bool = False
    log_on_step: bool = False
    log_on_epoch: bool = True
    preds: Literal["probs", "logits", "labels"] = "probs"

    def __post_init__(self) -> None:
        self.params = dict(to_plain(self.params) or {})
        check_text("name", self.name, "the metric's log key is {stage}/{name}")
        key = self.name
        check_text(f"{key}.backend", self.backend, f"accepted: {list(BACKENDS)}")
        check_text(f"{key}.metric_class", self.metric_class, "accepted: a metric class name")
        self.backend = self.backend.lower()
        check_choice(f"{key}.backend", self.backend, BACKENDS)
        self.stages = checked_stages(f"{key}.stages", self.stages)
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

    def build(
        self, num_classes: int, multi_label: bool = False, threshold: float | list[float] = 0.5
    ) -> nn.Module:
        """The metric for `num_classes` classes (or labels, with `multi_label`).

        num_classes/task (multi-label: num_labels, task='multilabel' and a float
        `threshold`) are filled in when the class takes them.
        """
        cls = self.resolve_class()
        accepted = accepted_params(cls)
        if multi_label:
            params = multi_label_params(
                self.name, cls, self.params, accepted, num_classes, threshold
            )
        else:
            params = dict(self.params)
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


def as_metric_config(value: MetricConfig | dict[str, Any]) -> MetricConfig:
    """A MetricConfig as is, or one from a dict (a config node: `_target_` is ignored);
    unknown keys and a missing name or metric_class are refused, naming the accepted keys."""
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
    raise UserError(f"Expected a MetricConfig or dict, got {value!r}")
