"""Checks of MetricConfig and MetricManager arguments: each error names its field."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import torch

from autotimm.checks import ConfigValueError
from autotimm.utils import to_plain

STAGES = ("train", "val", "test")


def check_text(key: str, value: Any, accepted: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigValueError(key, value, f"must be a non-empty string; {accepted}")


def checked_stages(key: str, stages: Any) -> list[str]:
    """Stages in any letter case (one stage name alone too) -> lower-case, no repeats."""
    stages = to_plain(stages)
    stages = [stages] if isinstance(stages, str) else stages
    accepted = f"accepted: a non-empty list of {list(STAGES)}"
    if not isinstance(stages, (list, tuple)):
        raise ConfigValueError(key, stages, f"not a list; {accepted}")
    if not stages:
        raise ConfigValueError(key, stages, f"empty: the metric would never run; {accepted}")
    lowered = [s.lower() if isinstance(s, str) else s for s in stages]
    unknown = [s for s, low in zip(stages, lowered, strict=True) if low not in STAGES]
    if unknown:
        raise ConfigValueError(key, stages, f"unknown stage {unknown}; {accepted}")
    return list(dict.fromkeys(lowered))


def checked_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise ConfigValueError("num_classes", num_classes, "must be an integer >= 1")
    return int(num_classes)


def checked_threshold(value: Any, num_labels: int) -> float | list[float]:
    """A threshold in (0, 1), or one per label: the multi-label `threshold` argument."""
    value = to_plain(value)
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    accepted = (
        f"accepted: a number in (0, 1), or a list of {num_labels} such numbers, one per label"
    )
    if isinstance(value, (list, tuple)):
        if len(value) != num_labels or not all(_is_fraction(v) for v in value):
            raise ConfigValueError("threshold", value, f"{len(value)} entries; {accepted}")
        return [float(v) for v in value]
    if not _is_fraction(value):
        raise ConfigValueError("threshold", value, accepted)
    return float(value)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and 0.0 < value < 1.0
