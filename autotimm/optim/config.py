"""The optimizer and scheduler as library types: `OptimizerConfig`, `SchedulerConfig`.

The optimizer and scheduler config groups instantiate into these (`conf/optimizer/*.yaml`,
`conf/scheduler/*.yaml`), and ImageClassifier accepts them or builds them from its keyword
arguments. Each checks itself once, when built: the optimizer by building it on a stand-in
model (bad kwargs fail with the accepted ones), the scheduler on that optimizer when it is
given one (`SchedulerConfig(..., optimizer=...)`: the config groups and ImageClassifier do),
else on a stand-in SGD and the pair again later (`check_with`), since some schedulers need
what only some optimizers have (onecycle: momentum or betas).

Errors name the field (`lr=-0.1: must be > 0`); a config group adds its key in front
(`optimizer.lr=...`), ImageClassifier renames `name`/`kwargs` to its own arguments.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

from autotimm.checks import check_positive
from autotimm.utils import to_plain


@dataclass
class OptimizerConfig:
    """An optimizer from `list_optimizers()` (or {'class', 'params'}) with lr and weight decay;
    layer-wise lr decay (None: off) and the backbone's lr factor when unfreezing it."""

    name: str | dict[str, Any] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kwargs: dict[str, Any] = field(default_factory=dict)
    layer_decay: float | None = None
    backbone_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        from autotimm.optim.check import check_optimizer
        from autotimm.optim.lr_groups import check_layer_decay

        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        check_layer_decay(self.layer_decay)
        check_positive("backbone_lr_scale", self.backbone_lr_scale)
        # built once on a stand-in model; the scheduler's pair check reuses it
        self._stand_in = check_optimizer(self.name, self.lr, self.weight_decay, self.kwargs)


@dataclass
class SchedulerConfig:
    """A scheduler from `list_schedulers()` (or {'class', 'params'}; None: constant lr) and
    its kwargs (plus `warmup_epochs`, `interval` and, for plateau, `monitor`).

    `optimizer` (not kept): check it on that optimizer at once, instead of on a stand-in
    SGD with momentum and again later with the optimizer (`check_with`)."""

    name: str | dict[str, Any] | None = "cosine"
    kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: InitVar[OptimizerConfig | None] = None

    def __post_init__(self, optimizer: OptimizerConfig | None) -> None:
        from autotimm.optim.check import check_scheduler

        self.name = to_plain(self.name)
        self.kwargs = dict(to_plain(self.kwargs) or {})
        stand_in = optimizer._stand_in if optimizer is not None else None
        check_scheduler(self.name, self.kwargs, stand_in)
        self._checked_with = optimizer

    def check_with(self, optimizer: OptimizerConfig) -> None:
        """Check the pair: this scheduler built on `optimizer` (once per optimizer)."""
        from autotimm.optim.check import check_scheduler

        if self._checked_with is not optimizer:
            check_scheduler(self.name, self.kwargs, optimizer._stand_in)
            self._checked_with = optimizer
