"""Optimizer and scheduler registries: the documented names -> configured objects.

Optimizers come from timm's factory (`timm.optim.create_optimizer_v2`), which also
keeps norm and bias parameters out of weight decay and skips frozen parameters.
Schedulers are torch's (and timm's cosine with restarts), each returned as a
Lightning scheduler config stepped at the interval it is designed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from autotimm.utils import import_object, to_plain

# documented name -> timm optimizer name
OPTIMIZERS: dict[str, str] = {
    "adamw": "adamw",
    "adam": "adam",
    "sgd": "sgd",
    "rmsprop": "rmsprop",
    "adagrad": "adagrad",
    "adamp": "adamp",
    "sgdp": "sgdp",
    "adabelief": "adabelief",
    "radam": "radam",
    "lamb": "lamb",
    "lars": "lars",
    "madgrad": "madgrad",
    "novograd": "novograd",
}
# torch has fused CUDA kernels for these; used automatically on a GPU
_FUSED_CAPABLE = {"adamw", "adam", "sgd"}

SCHEDULERS: tuple[str, ...] = (
    "cosine",
    "step",
    "multistep",
    "exponential",
    "onecycle",
    "plateau",
    "cosine_with_restarts",
    "none",
)


def list_optimizers() -> list[str]:
    """Optimizer names ImageClassifier accepts (plus the {'class', 'params'} form)."""
    return list(OPTIMIZERS)


def list_schedulers() -> list[str]:
    """Scheduler names ImageClassifier accepts (plus the {'class', 'params'} form)."""
    return list(SCHEDULERS)


def validate_optimizer(optimizer: str | dict[str, Any]) -> None:
    """Fail at construction time for unknown names or a dict without 'class'."""
    _validate_named(optimizer, list_optimizers(), "optimizer")


def validate_scheduler(scheduler: str | dict[str, Any] | None) -> None:
    if scheduler is not None:
        _validate_named(scheduler, list_schedulers(), "scheduler")


def _validate_named(spec: str | dict[str, Any], names: list[str], kind: str) -> None:
    if not isinstance(spec, str):
        _validate_custom(spec, kind)
    elif spec.lower() not in names:
        raise ValueError(
            f"Unknown {kind} {spec!r}; accepted: {names} "
            "or {'class': 'dotted.Path', 'params': {...}}"
        )


def _validate_custom(spec: Any, kind: str) -> None:
    if not isinstance(spec, dict) or "class" not in spec:
        raise ValueError(
            f"A custom {kind} must be a dict with a 'class' key (and optional 'params'), "
            f"got {spec!r}"
        )
    extra = set(spec) - {"class", "params"}
    if extra:
        raise ValueError(f"Custom {kind} keys {sorted(extra)} not accepted; use 'class', 'params'")
    import_object(spec["class"])


def validate_optimizer_kwargs(
    optimizer: str | dict[str, Any], optimizer_kwargs: dict[str, Any] | None
) -> None:
    """`lr` and `weight_decay` have their own ImageClassifier arguments."""
    params = dict(optimizer.get("params") or {}) if isinstance(optimizer, dict) else {}
    clash = sorted((set(optimizer_kwargs or {}) | set(params)) & {"lr", "weight_decay"})
    if clash:
        raise ValueError(
            f"Optimizer options {clash} must be given as ImageClassifier(lr=..., "
            "weight_decay=...), not in optimizer_kwargs or the optimizer's 'params'"
        )


def create_optimizer(
    model: nn.Module,
    optimizer: str | dict[str, Any],
    lr: float,
    weight_decay: float,
    optimizer_kwargs: dict[str, Any] | None = None,
    allow_fused: bool = False,
) -> torch.optim.Optimizer:
    """Build the optimizer over the trainable parameters of `model`.

    Norm and bias (1-d) parameters and the model's `no_weight_decay()` names get no
    weight decay. `allow_fused` lets adamw/adam/sgd use torch's fused kernels when
    every trainable parameter is on CUDA (the caller knows whether clipping or a
    GradScaler forbid them).
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    optimizer = to_plain(optimizer)
    kwargs = dict(to_plain(optimizer_kwargs) or {})
    validate_optimizer_kwargs(optimizer, kwargs)
    if isinstance(optimizer, dict):
        params = {**(optimizer.get("params") or {}), **kwargs}
        cls = import_object(optimizer["class"])
        no_decay = getattr(model, "no_weight_decay", lambda: set())()
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)
        return cls(groups, lr=lr, **params)
    name = optimizer.lower()
    validate_optimizer(name)
    if allow_fused and name in _FUSED_CAPABLE and "fused" not in kwargs and "foreach" not in kwargs:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if trainable and all(p.is_cuda and p.is_floating_point() for p in trainable):
            kwargs["fused"] = True
    return create_optimizer_v2(
        model, opt=OPTIMIZERS[name], lr=lr, weight_decay=weight_decay, **kwargs
    )


@dataclass
class TrainingLength:
    """What the trainer knows about the run length, used to size schedulers."""

    total_steps: int
    max_epochs: int
    steps_per_epoch: int


def create_scheduler(
    scheduler: str | dict[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    length: TrainingLength | None,
    scheduler_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Return a Lightning lr-scheduler config dict, or None for no scheduler.

    `warmup_epochs` in `scheduler_kwargs` adds a linear warm-up (for every scheduler
    but plateau and onecycle, which has its own `pct_start`). `length` (the run length
    from the trainer) is needed by the named schedulers other than 'none'.
    `interval` ('step' or 'epoch') overrides when Lightning steps the scheduler;
    `monitor` (plateau, or a custom ReduceLROnPlateau) names the metric to watch
    (default `val/loss`) and is not passed to torch.
    """
    scheduler = to_plain(scheduler)
    kwargs = dict(to_plain(scheduler_kwargs) or {})
    warmup_epochs = int(kwargs.pop("warmup_epochs", 0) or 0)
    interval = kwargs.pop("interval", None)
    if interval not in (None, "step", "epoch"):
        raise ValueError(f"scheduler interval {interval!r} not accepted; use 'step' or 'epoch'")
    if scheduler is None:
        scheduler = "none"
    if isinstance(scheduler, dict):
        if warmup_epochs:
            raise ValueError(
                "warmup_epochs works with the named schedulers only; for a custom "
                f"{scheduler.get('class')!r} build the warm-up into it (e.g. SequentialLR)"
            )
        params = {**(scheduler.get("params") or {}), **kwargs}
        monitor = params.pop("monitor", "val/loss")
        cls = import_object(scheduler["class"])
        sched = cls(optimizer, **params)
        config = {"scheduler": sched, "interval": interval or "epoch"}
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = monitor
        return config
    name = scheduler.lower()
    validate_scheduler(name)
    if warmup_epochs and name in ("plateau", "onecycle"):
        raise ValueError(
            f"warmup_epochs is not supported with scheduler {name!r} "
            "(onecycle warms up through pct_start); use it with "
            f"{[s for s in SCHEDULERS if s not in ('plateau', 'onecycle')]}"
        )
    if length is None and name != "none":
        raise ValueError(f"scheduler {name!r} needs the run length (TrainingLength)")
    builder = _BUILDERS[name]
    return builder(optimizer, length, kwargs, warmup_epochs, interval)


def _with_warmup(
    optimizer: torch.optim.Optimizer,
    main: torch.optim.lr_scheduler.LRScheduler,
    warmup_iters: int,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over `warmup_iters` scheduler steps, then `main`."""
    from torch.optim.lr_scheduler import LinearLR, SequentialLR

    if warmup_iters <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup_iters)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_iters])


def _epoch_config(sched: Any, interval: str | None) -> dict[str, Any]:
    return {"scheduler": sched, "interval": interval or "epoch", "frequency": 1}


def _cosine(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import CosineAnnealingLR

    warmup = warmup_epochs * length.steps_per_epoch
    kwargs.setdefault("T_max", max(1, length.total_steps - warmup))
    main = CosineAnnealingLR(optimizer, **kwargs)
    return {"scheduler": _with_warmup(optimizer, main, warmup), "interval": interval or "step"}


def _step(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import StepLR

    # default: three decays over the run (x0.1 each), like the classic ImageNet recipe
    kwargs.setdefault("step_size", max(1, length.max_epochs // 3))
    main = StepLR(optimizer, **kwargs)
    return _epoch_config(_with_warmup(optimizer, main, warmup_epochs), interval)


def _multistep(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import MultiStepLR

    epochs = length.max_epochs
    kwargs.setdefault("milestones", sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))}))
    main = MultiStepLR(optimizer, **kwargs)
    return _epoch_config(_with_warmup(optimizer, main, warmup_epochs), interval)


def _exponential(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import ExponentialLR

    kwargs.setdefault("gamma", 0.95)
    main = ExponentialLR(optimizer, **kwargs)
    return _epoch_config(_with_warmup(optimizer, main, warmup_epochs), interval)


def _onecycle(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import OneCycleLR

    kwargs.setdefault("max_lr", [g["lr"] for g in optimizer.param_groups])
    kwargs.setdefault("total_steps", max(1, length.total_steps))
    return {"scheduler": OneCycleLR(optimizer, **kwargs), "interval": interval or "step"}


def _plateau(optimizer, length, kwargs, warmup_epochs, interval):
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    # `monitor` is Lightning's key, not a ReduceLROnPlateau argument
    monitor = kwargs.pop("monitor", "val/loss")
    kwargs.setdefault("mode", "min" if monitor.endswith("loss") else "max")
    kwargs.setdefault("patience", 2)
    return {
        "scheduler": ReduceLROnPlateau(optimizer, **kwargs),
        "interval": interval or "epoch",
        "monitor": monitor,
        "strict": True,
    }


def _cosine_with_restarts(optimizer, length, kwargs, warmup_epochs, interval):
    from timm.scheduler import CosineLRScheduler

    # `t_initial` and `warmup_t` are given in epochs (timm's convention) but the
    # schedule is updated every optimizer step so each cycle is a smooth cosine.
    # ImageClassifier.lr_scheduler_step drives it (it is not a torch LRScheduler).
    spe = length.steps_per_epoch
    t_initial = kwargs.pop("t_initial", max(1, length.max_epochs // 3))
    kwargs.setdefault("cycle_limit", max(1, length.max_epochs))
    kwargs.setdefault("lr_min", 0.0)
    warmup_t = kwargs.pop("warmup_t", warmup_epochs)
    if warmup_t:
        kwargs.setdefault("warmup_lr_init", optimizer.param_groups[0]["lr"] * 0.01)
    sched = CosineLRScheduler(
        optimizer,
        t_initial=max(1, round(t_initial * spe)),
        warmup_t=round(warmup_t * spe),
        t_in_epochs=False,
        **kwargs,
    )
    return {"scheduler": sched, "interval": interval or "step", "frequency": 1}


def _none(optimizer, length, kwargs, warmup_epochs, interval):
    if kwargs:
        raise ValueError(f"scheduler 'none' takes no scheduler_kwargs, got {sorted(kwargs)}")
    if not warmup_epochs:
        return None
    from torch.optim.lr_scheduler import ConstantLR

    main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    return _epoch_config(_with_warmup(optimizer, main, warmup_epochs), interval)


_BUILDERS = {
    "cosine": _cosine,
    "step": _step,
    "multistep": _multistep,
    "exponential": _exponential,
    "onecycle": _onecycle,
    "plateau": _plateau,
    "cosine_with_restarts": _cosine_with_restarts,
    "none": _none,
}


def dry_run_optimization(
    optimizer: str | dict[str, Any],
    optimizer_kwargs: dict[str, Any] | None,
    scheduler: str | dict[str, Any] | None,
    scheduler_kwargs: dict[str, Any] | None,
    lr: float,
) -> None:
    """Build the optimizer and scheduler once on a tiny stand-in model so bad kwargs
    fail at construction (ValueError naming them), not after the first epoch."""
    probe = nn.Linear(2, 2)
    try:
        opt = create_optimizer(probe, optimizer, lr, 0.0, optimizer_kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"optimizer {optimizer!r} rejected optimizer_kwargs {optimizer_kwargs!r}: {exc}"
        ) from exc
    try:
        create_scheduler(scheduler, opt, TrainingLength(100, 10, 10), scheduler_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"scheduler {scheduler!r} rejected scheduler_kwargs {scheduler_kwargs!r}: {exc}"
        ) from exc
