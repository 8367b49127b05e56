"""Metrics: `MetricConfig` (config), the `MetricManager` that builds one metric per stage
(manager) and the batches it keeps between updates (kept), what each step and epoch logs
(`stage_logs`), what each metric is fed (`inputs`) and the checks of their arguments
(`checks`).

A library layer: imports only the top-level helpers.
"""

from __future__ import annotations

from autotimm.metrics.config import MetricConfig
from autotimm.metrics.manager import MetricManager

__all__ = ["MetricConfig", "MetricManager"]
