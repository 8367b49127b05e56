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
    "ImageClassifier": "autotimm.classifier",
    "BackboneConfig": "autotimm.backbone",
    "list_backbones": "autotimm.backbone",
    "ClassificationHead": "autotimm.heads",
    "MetricConfig": "autotimm.metrics",
    "MetricManager": "autotimm.metrics",
    "LoggingConfig": "autotimm.logging_config",
    "list_optimizers": "autotimm.optim",
    "list_schedulers": "autotimm.optim",
}

__all__ = [
    "BackboneConfig",
    "ClassificationHead",
    "ImageClassifier",
    "LoggingConfig",
    "MetricConfig",
    "MetricManager",
    "list_backbones",
    "list_optimizers",
    "list_schedulers",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from autotimm.backbone import BackboneConfig, list_backbones
    from autotimm.classifier import ImageClassifier
    from autotimm.heads import ClassificationHead
    from autotimm.logging_config import LoggingConfig
    from autotimm.metrics import MetricConfig, MetricManager
    from autotimm.optim import list_optimizers, list_schedulers


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autotimm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
