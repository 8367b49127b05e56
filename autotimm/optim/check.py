"""The one check of the optimizer and scheduler arguments, dry run included.

`OptimizerConfig` and `SchedulerConfig` (autotimm.optim.config) call these once, when
built: building the optimizer on a tiny stand-in model, and the scheduler on it, makes bad
kwargs fail here, with the accepted ones, instead of after the first epoch. Errors name
the config's fields (`name`, `lr`, `weight_decay`, `kwargs`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn

from autotimm.checks import ConfigValueError, check_non_negative, check_positive, close_matches
from autotimm.optim.factory import (
    DOCUMENTED_OPTIMIZERS,
    SCHEDULERS,
    TrainingLength,
    create_optimizer,
    create_scheduler,
    optimizer_class,
    scheduler_class,
)
from autotimm.utils import import_object

_CUSTOM_FORM = "{'class': 'dotted.Path', 'params': {...}}"
# a 10-epoch run of 100 optimizer steps: enough to size every named scheduler
_PROBE_LENGTH = TrainingLength(total_steps=100, max_epochs=10, steps_per_epoch=10)
# create_scheduler's own keys, on top of the scheduler class's arguments
_SCHEDULER_KEYS = ["warmup_epochs", "interval"]


def check_optimizer(
    optimizer: str | dict[str, Any],
    lr: float,
    weight_decay: float,
    kwargs: dict[str, Any] | None,
) -> torch.optim.Optimizer:
    """Check the optimizer arguments; returns the optimizer built on a stand-in model."""
    from timm.optim import list_optimizers as timm_optimizers

    _check_named("name", optimizer, timm_optimizers(), "optimizer")
    check_positive("lr", lr)
    check_non_negative("weight_decay", weight_decay)
    _check_no_lr_in_kwargs(optimizer, kwargs)
    try:
        return create_optimizer(nn.Linear(2, 2), optimizer, lr, weight_decay, kwargs)
    except Exception as exc:  # any failure to build is a problem of these arguments
        key, value = ("kwargs", kwargs) if kwargs else ("name", optimizer)
        accepted = _keywords(_class_of(optimizer_class, optimizer))
        raise ConfigValueError(key, value, _problem(exc, accepted)) from exc


def check_scheduler(
    scheduler: str | dict[str, Any] | None,
    kwargs: dict[str, Any] | None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Check the scheduler arguments by building it once on `optimizer` (default: a
    stand-in SGD with momentum)."""
    if scheduler is not None:
        _check_named("name", scheduler, SCHEDULERS, "scheduler")
    stand_in = optimizer is None
    if stand_in:
        optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1e-3, momentum=0.9)
    try:
        create_scheduler(scheduler, optimizer, _PROBE_LENGTH, kwargs)
    except Exception as exc:  # any failure to build is a problem of these arguments
        key, value = ("kwargs", kwargs) if kwargs else ("name", scheduler)
        accepted = _keywords(_class_of(scheduler_class, scheduler)) + _SCHEDULER_KEYS
        if isinstance(scheduler, dict) or str(scheduler).lower() == "plateau":
            accepted.append("monitor")
        problem = _problem(exc, accepted)
        if not stand_in:
            problem = f"with the {type(optimizer).__name__} optimizer: {problem}"
        raise ConfigValueError(key, value, problem) from exc


def _check_named(key: str, spec: Any, names: Any, kind: str) -> None:
    """A known name (any case), or the custom {'class', 'params'} form."""
    if isinstance(spec, str):
        if spec.lower() in names:
            return
        listed = list(DOCUMENTED_OPTIMIZERS if kind == "optimizer" else SCHEDULERS)
        more = " (or any of timm.optim.list_optimizers())" if kind == "optimizer" else ""
        raise ConfigValueError(
            key,
            spec,
            f"unknown {kind}{close_matches(spec.lower(), names)}; "
            f"accepted: {listed}{more} or {_CUSTOM_FORM}",
        )
    if not isinstance(spec, dict) or "class" not in spec or set(spec) - {"class", "params"}:
        raise ConfigValueError(key, spec, f"accepted: a {kind} name or {_CUSTOM_FORM}")
    try:
        import_object(spec["class"])
    except ValueError as exc:
        raise ConfigValueError(key, spec, f"its class cannot be imported ({exc})") from exc


def _check_no_lr_in_kwargs(optimizer: Any, kwargs: dict[str, Any] | None) -> None:
    """lr and weight_decay have their own arguments: not in the kwargs or the 'params'."""
    params = optimizer.get("params") if isinstance(optimizer, dict) else None
    for key, value, options in (
        ("kwargs", kwargs, kwargs),
        ("name", optimizer, params),
    ):
        clash = sorted(set(options or {}) & {"lr", "weight_decay"})
        if clash:
            raise ConfigValueError(
                key,
                value,
                f"sets {clash}; they have their own keys (lr, weight_decay)",
            )


def _problem(exc: Exception, accepted: list[str]) -> str:
    """What building said; for an unknown keyword (TypeError), the accepted ones too."""
    if isinstance(exc, TypeError):
        return f"{exc}; accepted: {accepted}"
    return str(exc)


def _class_of(find: Any, spec: Any) -> Any:
    try:
        return find(spec)
    except Exception:  # only used to list the accepted kwargs in an error message
        return None


def _keywords(cls: Any) -> list[str]:
    """The keyword arguments `cls` takes besides what autotimm passes itself."""
    skip = {"self", "params", "optimizer", "lr", "weight_decay", "args", "kwargs"}
    try:
        return [p for p in inspect.signature(cls).parameters if p not in skip]
    except (TypeError, ValueError):
        return []
