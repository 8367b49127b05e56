"""autotimm: timm image classifiers as Lightning modules, driven by Hydra.

`import autotimm` stays light: the public names below are imported on first use,
so a bare import costs no torch/timm/lightning start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ImageClassifier": "autotimm.model.classifier",
    "BackboneConfig": "autotimm.model.backbone",
    "list_backbones": "autotimm.model.backbone",
    "ClassificationHead": "autotimm.model.heads",
    "MetricConfig": "autotimm.metrics.config",
    "MetricManager": "autotimm.metrics.manager",
    "LoggingConfig": "autotimm.model.logging_config",
    "OptimizerConfig": "autotimm.optim.config",
    "SchedulerConfig": "autotimm.optim.config",
    "RegularizationConfig": "autotimm.model.regularization",
    "list_optimizers": "autotimm.optim.factory",
    "list_schedulers": "autotimm.optim.factory",
}

__all__ = [
    "BackboneConfig",
    "ClassificationHead",
    "ImageClassifier",
    "LoggingConfig",
    "MetricConfig",
    "MetricManager",
    "OptimizerConfig",
    "RegularizationConfig",
    "SchedulerConfig",
    "list_backbones",
    "list_optimizers",
    "list_schedulers",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from autotimm.metrics.config import MetricConfig
    from autotimm.metrics.manager import MetricManager
    from autotimm.model.backbone import BackboneConfig, list_backbones
    from autotimm.model.classifier import ImageClassifier
    from autotimm.model.heads import ClassificationHead
    from autotimm.model.logging_config import LoggingConfig
    from autotimm.model.regularization import RegularizationConfig
    from autotimm.optim.config import OptimizerConfig, SchedulerConfig
    from autotimm.optim.factory import list_optimizers, list_schedulers


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autotimm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
