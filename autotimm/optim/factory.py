"""Optimizer and scheduler registries: names -> configured objects.

Optimizers come from timm's registry and factory (`timm.optim.create_optimizer_v2`), which
also keeps norm and bias parameters out of weight decay and skips frozen parameters.
Schedulers are torch's (and timm's cosine with restarts), each returned as a Lightning
scheduler config stepped at the interval it is designed for. The arguments are checked
once, before anything is built, by `autotimm.optim.check`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from autotimm.user_errors import UserError
from autotimm.utils import import_object, to_plain

# The names the spec documents (one conf/optimizer file each); timm's registry accepts
# these and many more, and so does ImageClassifier.
DOCUMENTED_OPTIMIZERS = (
    *("adamw", "adam", "sgd", "rmsprop", "adagrad"),
    *("adamp", "sgdp", "adabelief", "radam", "lamb", "lars", "madgrad", "novograd"),
)
# torch has fused CUDA kernels for these; used automatically on a GPU
_FUSED_CAPABLE = {"adamw", "adam", "sgd"}


def list_optimizers(include_all: bool = False) -> list[str]:
    """The documented optimizer names (one conf/optimizer file each); with `include_all`,
    every name in timm's optimizer registry. ImageClassifier accepts all of timm's names,
    and the {'class': 'dotted.Path', 'params': {...}} form."""
    if include_all:
        from timm.optim import list_optimizers as timm_optimizers

        return list(timm_optimizers())
    return list(DOCUMENTED_OPTIMIZERS)


def optimizer_class(optimizer: str | dict[str, Any]) -> Any:
    """The class (or timm's partial) behind an optimizer name or {'class', 'params'}."""
    from timm.optim import get_optimizer_class

    if isinstance(optimizer, dict):
        return import_object(optimizer["class"])
    return get_optimizer_class(optimizer.lower())


def create_optimizer(
    model: nn.Module,
    optimizer: str | dict[str, Any],
    lr: float,
    weight_decay: float,
    optimizer_kwargs: dict[str, Any] | None = None,
    allow_fused: bool = False,
    layer_decay: float | None = None,
    backbone_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """Build the optimizer over the trainable parameters of `model` (arguments already
    checked by `check_optimizer`).

    Norm and bias (1-d) parameters and the model's `no_weight_decay()` names get no
    weight decay. `allow_fused` lets adamw/adam/sgd use torch's fused kernels when
    every trainable parameter is on CUDA (the caller knows whether clipping or a
    GradScaler forbid them). `layer_decay` (timm's layer-wise lr decay) and
    `backbone_lr_scale` give parameter groups their own lr (`autotimm.optim.lr_groups`).
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    from autotimm.optim.lr_groups import scaled_param_groups

    optimizer = to_plain(optimizer)
    kwargs = dict(to_plain(optimizer_kwargs) or {})
    scaled = layer_decay is not None or backbone_lr_scale != 1.0
    if scaled:
        params = scaled_param_groups(model, lr, weight_decay, layer_decay, backbone_lr_scale)
    if isinstance(optimizer, dict):
        options = {**(optimizer.get("params") or {}), **kwargs}
        cls = import_object(optimizer["class"])
        if not scaled:
            no_decay = getattr(model, "no_weight_decay", lambda: set())()
            params = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay)
        return cls(params, lr=lr, **options)
    name = optimizer.lower()
    if allow_fused and name in _FUSED_CAPABLE and "fused" not in kwargs and "foreach" not in kwargs:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if trainable and all(p.is_cuda and p.is_floating_point() for p in trainable):
            kwargs["fused"] = True
    # param groups go to timm's factory as they are (their lr and weight decay kept)
    target = params if scaled else model
    return create_optimizer_v2(target, opt=name, lr=lr, weight_decay=weight_decay, **kwargs)


# ------------------------------------------------------------------------ schedulers
#
# Why not timm's `create_scheduler_v2` for all of them: the documented scheduler_kwargs
# are torch's argument names (T_max, eta_min, step_size, milestones, gamma, max_lr, ...),
# which it does not take; it has no onecycle or exponential; its multistep counts
# milestones from 1 (`bisect(t + 1)`), one epoch earlier than torch's; and what Lightning
# needs on top, the interval (per step or per epoch) and plateau's `monitor` key, is not
# a scheduler's business. So torch classes and their kwargs stay, sized from the run
# length; timm's CosineLRScheduler serves cosine_with_restarts, which torch lacks.
# Those sized from the run length re-size when a run resumes longer
# (autotimm.optim.resizing_schedulers).


@dataclass
class TrainingLength:
    """What the trainer knows about the run length, used to size schedulers."""

    total_steps: int
    max_epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class _TorchScheduler:
    """A named torch scheduler: class, default interval, kwargs defaults from the run."""

    cls: str
    interval: str
    # (run length in the scheduler's own steps, optimizer, warm-up steps) -> default kwargs
    defaults: Callable[[int, torch.optim.Optimizer, int], dict[str, Any]]
    # the kwarg that holds the length sized from the run (None: the run length is unused)
    length_key: str | None = None


def _milestones(units: int, *_: Any) -> dict[str, Any]:
    return {"milestones": sorted({max(1, int(units * 0.5)), max(1, int(units * 0.75))})}


_TORCH_SCHEDULERS: dict[str, _TorchScheduler] = {
    "cosine": _TorchScheduler(
        "CosineAnnealingLR", "step", lambda n, o, warm: {"T_max": max(1, n - warm)}, "T_max"
    ),
    # default: three decays over the run (x0.1 each), like the classic ImageNet recipe
    "step": _TorchScheduler(
        "StepLR", "epoch", lambda n, *_: {"step_size": max(1, n // 3)}, "step_size"
    ),
    "multistep": _TorchScheduler("MultiStepLR", "epoch", _milestones, "milestones"),
    "exponential": _TorchScheduler("ExponentialLR", "epoch", lambda *_: {"gamma": 0.95}),
    "onecycle": _TorchScheduler(
        "OneCycleLR",
        "step",
        lambda n, o, _: {"max_lr": [g["lr"] for g in o.param_groups], "total_steps": max(1, n)},
        "total_steps",
    ),
}
# scheduler 'none' with warmup_epochs: the warm-up, then the constant lr
_CONSTANT = _TorchScheduler("ConstantLR", "epoch", lambda *_: {"factor": 1.0, "total_iters": 0})
# onecycle warms up through pct_start; plateau reacts to a metric
_NO_WARMUP = ("plateau", "onecycle")
SCHEDULERS: tuple[str, ...] = (*_TORCH_SCHEDULERS, "plateau", "cosine_with_restarts", "none")


def list_schedulers() -> list[str]:
    """Scheduler names ImageClassifier accepts (plus the {'class', 'params'} form)."""
    return list(SCHEDULERS)


def create_scheduler(
    scheduler: str | dict[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    length: TrainingLength | None,
    scheduler_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Return a Lightning lr-scheduler config dict, or None for no scheduler (arguments
    already checked by `check_scheduler`).

    `warmup_epochs` in `scheduler_kwargs` adds a linear warm-up (for every scheduler
    but plateau and onecycle, which has its own `pct_start`). `length` (the run length
    from the trainer) is needed by the named schedulers other than 'none'.
    Lengths sized from it re-size when a run resumes with another length (the rule:
    `autotimm.optim.resizing_schedulers`).
    `interval` ('step' or 'epoch') overrides when Lightning steps the scheduler;
    `monitor` (plateau, or a custom ReduceLROnPlateau) names the metric to watch
    (default `val/loss`) and is not passed to torch.
    """
    scheduler = to_plain(scheduler)
    kwargs = dict(to_plain(scheduler_kwargs) or {})
    warmup_epochs = int(kwargs.pop("warmup_epochs", 0) or 0)
    interval = kwargs.pop("interval", None)
    if interval not in (None, "step", "epoch"):
        raise UserError(f"interval={interval!r}: accepted: ['step', 'epoch']")
    if isinstance(scheduler, dict):
        return _custom(scheduler, optimizer, kwargs, warmup_epochs, interval)
    name = (scheduler or "none").lower()
    if warmup_epochs and name in _NO_WARMUP:
        usable = [s for s in SCHEDULERS if s not in _NO_WARMUP]
        raise UserError(f"warmup_epochs does not work with {name!r}; use it with {usable}")
    if name == "none":
        if kwargs:
            raise UserError(f"scheduler 'none' takes no scheduler_kwargs, got {sorted(kwargs)}")
        if not warmup_epochs:
            return None
        return _torch(_CONSTANT, optimizer, length, {}, warmup_epochs, interval)
    if length is None:
        raise ValueError(f"scheduler {name!r} needs the run length (TrainingLength)")
    if name == "plateau":
        return _plateau(optimizer, kwargs, interval)
    if name == "cosine_with_restarts":
        return _cosine_with_restarts(optimizer, length, kwargs, warmup_epochs, interval)
    return _torch(_TORCH_SCHEDULERS[name], optimizer, length, kwargs, warmup_epochs, interval)


def _torch(
    spec: _TorchScheduler,
    optimizer: torch.optim.Optimizer,
    length: TrainingLength | None,
    kwargs: dict[str, Any],
    warmup_epochs: int,
    interval: str | None,
) -> dict[str, Any]:
    import torch.optim.lr_scheduler as lr_scheduler

    from autotimm.optim.resizing_schedulers import RESIZABLE

    # lengths and the warm-up count in the scheduler's own steps: optimizer steps or epochs
    per_step = (interval or spec.interval) == "step"
    warmup = warmup_epochs * (length.steps_per_epoch if per_step and length else 1)
    units = 0 if length is None else length.total_steps if per_step else length.max_epochs
    cls = RESIZABLE.get(spec.cls) or getattr(lr_scheduler, spec.cls)
    main = cls(optimizer, **{**spec.defaults(units, optimizer, warmup), **kwargs})
    if spec.length_key is not None:
        # a resumed run with another length re-sizes what was sized from the run
        main.mark_run(units - warmup, sized_from_run=spec.length_key not in kwargs)
    sched = _with_warmup(optimizer, main, warmup)
    return {"scheduler": sched, "interval": interval or spec.interval, "frequency": 1}


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


def _plateau(
    optimizer: torch.optim.Optimizer, kwargs: dict[str, Any], interval: str | None
) -> dict[str, Any]:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    # `monitor` is Lightning's key (the metric it passes to step()), not a torch argument
    monitor = kwargs.pop("monitor", "val/loss")
    kwargs.setdefault("mode", "min" if monitor.endswith("loss") else "max")
    kwargs.setdefault("patience", 2)
    return {
        "scheduler": ReduceLROnPlateau(optimizer, **kwargs),
        "interval": interval or "epoch",
        "monitor": monitor,
        "strict": True,
    }


def _cosine_with_restarts(
    optimizer: torch.optim.Optimizer,
    length: TrainingLength,
    kwargs: dict[str, Any],
    warmup_epochs: int,
    interval: str | None,
) -> dict[str, Any]:
    from autotimm.optim.resizing_schedulers import CosineRestarts

    # `t_initial` and `warmup_t` are given in epochs (timm's convention) but the
    # schedule is updated every optimizer step so each cycle is a smooth cosine.
    # ImageClassifier.lr_scheduler_step drives it (it is not a torch LRScheduler).
    spe = length.steps_per_epoch
    sized_from_run = "t_initial" not in kwargs
    t_initial = kwargs.pop("t_initial", max(1, length.max_epochs // 3))
    kwargs.setdefault("cycle_limit", max(1, length.max_epochs))
    kwargs.setdefault("lr_min", 0.0)
    warmup_t = kwargs.pop("warmup_t", warmup_epochs)
    if warmup_t:
        kwargs.setdefault("warmup_lr_init", optimizer.param_groups[0]["lr"] * 0.01)
    sched = CosineRestarts(
        optimizer,
        t_initial=max(1, round(t_initial * spe)),
        warmup_t=round(warmup_t * spe),
        t_in_epochs=False,
        **kwargs,
    )
    sched.mark_run(length.total_steps, sized_from_run)  # re-sized when resumed longer
    return {"scheduler": sched, "interval": interval or "step", "frequency": 1}


def _custom(
    spec: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    kwargs: dict[str, Any],
    warmup_epochs: int,
    interval: str | None,
) -> dict[str, Any]:
    if warmup_epochs:
        raise UserError(
            "warmup_epochs works with the named schedulers only; for a custom "
            f"{spec.get('class')!r} build the warm-up into it (e.g. SequentialLR)"
        )
    params = {**(spec.get("params") or {}), **kwargs}
    monitor = params.pop("monitor", "val/loss")
    sched = import_object(spec["class"])(optimizer, **params)
    config = {"scheduler": sched, "interval": interval or "epoch"}
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return config


def scheduler_class(scheduler: str | dict[str, Any] | None) -> Any:
    """The class behind a scheduler name or {'class', 'params'} (None for 'none')."""
    import torch.optim.lr_scheduler as lr_scheduler

    if isinstance(scheduler, dict):
        return import_object(scheduler["class"])
    name = (scheduler or "none").lower()
    if name in _TORCH_SCHEDULERS:
        return getattr(lr_scheduler, _TORCH_SCHEDULERS[name].cls)
    if name == "cosine_with_restarts":
        from timm.scheduler import CosineLRScheduler

        return CosineLRScheduler
    return lr_scheduler.ReduceLROnPlateau if name == "plateau" else None
