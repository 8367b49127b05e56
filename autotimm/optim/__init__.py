"""Optimizers and schedulers: the registries and factory (`factory`), the one check of their
arguments (`check`), scheduling glue, per-group learning rates and the schedulers that
re-size on resume.

A library layer: imports only the top-level helpers.
"""

from __future__ import annotations

from autotimm.optim.config import OptimizerConfig, SchedulerConfig
from autotimm.optim.factory import list_optimizers, list_schedulers

__all__ = ["OptimizerConfig", "SchedulerConfig", "list_optimizers", "list_schedulers"]
