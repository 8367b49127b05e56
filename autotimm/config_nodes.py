"""Typed nodes for the optimizer, scheduler and regularization config groups.

Each group file in `conf/` instantiates into one of these, so a bad name fails
when the config is instantiated; the model node reads their fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autotimm.optim import validate_optimizer, validate_scheduler
from autotimm.regularization import validate_regularization
from autotimm.utils import to_plain


@dataclass
class OptimizerConfig:
    """An optimizer from `list_optimizers()` (or {'class', 'params'}) with lr and weight decay."""

    name: str | dict[str, Any] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        validate_optimizer(self.name)
        if self.lr <= 0:
            raise ValueError(f"optimizer lr must be > 0, got {self.lr!r}")


@dataclass
class SchedulerConfig:
    """A scheduler from `list_schedulers()` (or {'class', 'params'}) and its kwargs."""

    name: str | dict[str, Any] | None = "cosine"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        validate_scheduler(self.name)


@dataclass
class RegularizationConfig:
    """Label smoothing, mixup/cutmix, head dropout and stochastic depth, together."""

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    head_dropout: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        validate_regularization(
            self.label_smoothing, self.mixup_alpha, self.cutmix_alpha, self.head_dropout
        )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")


def metric_list(**metrics: Any) -> list[Any]:
    """The metrics group: `name: {MetricConfig fields}` entries -> a list of MetricConfig.

    Keeping metrics as a mapping in YAML lets users override one
    (`metrics.f1_macro.prog_bar=true`) or drop one (`~metrics.top5`).
    """
    from autotimm.metrics import MetricConfig

    return [
        MetricConfig(**{"name": name, **(to_plain(fields) or {})})
        for name, fields in metrics.items()
        if fields is not None
    ]
