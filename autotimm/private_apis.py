"""Every private API of Lightning, rich, torch, timm and W&B that autotimm uses, in one place.

autotimm reaches a few internals for speed or for a decision only the library makes:
Lightning's "the loggers write at this step", its result collection and the hook it runs,
the rich progress bar's hooks and redraw thread, ModelCheckpoint's save and its record of
the last one, the CSV and W&B loggers' set-up, torch's closed-form lr of its schedulers and
its "inside step()" marker, timm's cosine lr, and the look for launch inputs every W&B run
start makes. (Hydra's and Optuna's
are in autotimm.sweep.plugin_api.) Each is named here once, with why it is used.

pyproject.toml bounds lightning, timm, rich and wandb below the next minor version not yet
checked (torch is bounded already); tests/test_private_apis.py checks that each name here is
in the installed versions with the shape relied on (attributes on real instances,
parameters, a usable context manager) and that no other module spells one: run it before
moving a bound.

The names are plain strings bound at import: a site reads `getattr(obj, NAME)`, which
costs what the `getattr(obj, "_name")` it replaces did, and no per-step path reads one
where it read a plain attribute before (the progress bar keeps the trainer `setup` gives
it instead of reading Lightning's `_trainer` twice a step). A subclass overriding a private
hook spells the hook's name in its `def` and `super()` call: `OVERRIDDEN` lists those, and
the test checks each still overrides a method of the same parameters.

Imports nothing of autotimm, and its libraries only inside functions.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

# -- Lightning ------------------------------------------------------------------------------

# LightningModule._trainer: the trainer or None; the `trainer` property raises when there
# is none (a step called by hand) and is a property call on every read in the step
TRAINER = "_trainer"
# LightningModule._current_fx_name: the hook Lightning runs now, set around every hook
# (about 45 times a training step: ImageClassifier keeps it a plain attribute); a logged
# value's result key is `{hook}.{name}`
CURRENT_FX_NAME = "_current_fx_name"
# Trainer._logger_connector.should_update_logs: Lightning's own rule for the steps the
# loggers write (log_every_n_steps over the steps that stepped); only those steps call
# `self.log` (about 1 ms of Python each)
LOGGER_CONNECTOR = "_logger_connector"
SHOULD_UPDATE_LOGS = "should_update_logs"
# Trainer._results: the active loop's result collection ({hook}.{name} -> a result with
# `has_reset` and `reset()`); resetting the last logging step's values spares Lightning
# re-reading them after every later batch (~60 us a step on a CPU, a host sync on a GPU)
RESULTS = "_results"
# ModelCheckpoint's record of its last save: last.ckpt hard-links the file another
# ModelCheckpoint wrote at the same global step instead of writing the same state again
CHECKPOINT_LAST_PATH = "_last_checkpoint_saved"
CHECKPOINT_LAST_STEP = "_last_global_step_saved"
# ModelCheckpoint._should_save_on_train_epoch_end(trainer): only a file saved at the same
# point of the step (the same loop counters) may stand in for last.ckpt
CHECKPOINT_SAVES_ON_TRAIN_EPOCH_END = "_should_save_on_train_epoch_end"
# RichProgressBar._update(bar_id, current): moves a bar's count; autotimm's bar moves the
# training count only as often as it redraws, and shows a held-back count at the epoch's end
BAR_UPDATE = "_update"
# Lightning's rich redraw thread (a rich.live._RefreshThread that redraws on request):
# replaced by one that ends when stopped, where each stop of the bar waited up to a redraw
# interval (0.25 s at 4 redraws a second)
REFRESH_THREAD = "lightning.pytorch.callbacks.progress.rich_progress:_RefreshThread"
# CSVLogger's file system and writer (_fs, _experiment) and its writer's
# _check_log_dir_exists(): the CSV logger writes into the run directory, which Hydra's
# files make non-empty, so Lightning's check warned of "previous log files" on every run
LOGGER_FS = "_fs"
LOGGER_EXPERIMENT = "_experiment"
CSV_CHECK_LOG_DIR = "_check_log_dir_exists"
# WandbLogger._wandb_init: the keywords its wandb.init gets (Lightning 2.6 always gives
# anonymous=None, which W&B warns about on every run)
WANDB_LOGGER_INIT = "_wandb_init"

_CHECKPOINT = "lightning.pytorch.callbacks:ModelCheckpoint"
_BAR = "lightning.pytorch.callbacks:RichProgressBar"

# -- rich -----------------------------------------------------------------------------------

# Live._refresh_thread and Live._lock: the display's redraw thread (the one replaced above)
# and the lock a redraw holds
LIVE_REFRESH_THREAD = "_refresh_thread"
LIVE_LOCK = "_lock"

# -- torch ----------------------------------------------------------------------------------

# torch's marker for "get_lr is called by step()": a re-sized scheduler computes its lr
# outside step(), where OneCycleLR's get_lr would warn
LR_IN_STEP = "torch.optim.lr_scheduler:_enable_get_lr_call"
# CosineAnnealingLR/StepLR/MultiStepLR._get_closed_form_lr(): the lr at any step, which
# a scheduler re-sized on resume computes at its warped position
CLOSED_FORM_LR = "_get_closed_form_lr"
# LRScheduler._last_lr: what get_last_lr() returns, set when a re-sized scheduler sets
# the lrs itself
LAST_LR = "_last_lr"
# nn.Module._compiled_call_impl: the forward of an in-place `model.compile()`, taken away
# while the flop counter runs (it must see aten ops, not compiled kernels)
COMPILED_CALL_IMPL = "_compiled_call_impl"
# nn.Module._modules: the children, read without the module's __getattr__ (MetricManager's
# flushes kept batches on attribute reads)
MODULE_CHILDREN = "_modules"
# torch._foreach_norm: one kernel for many tensors' norms (torch < 2.6, which has no
# torch.nn.utils.get_total_norm)
FOREACH_NORM = "_foreach_norm"

# -- W&B ------------------------------------------------------------------------------------

# Run._detect_and_apply_job_inputs: every run start imports W&B's launch package for it
# (1-3 s on 2 CPU cores); only `wandb.launch` calls in the same process stage inputs, and
# they import this module first
WANDB_JOB_INPUTS = "_detect_and_apply_job_inputs"
WANDB_LAUNCH_INPUTS = "wandb.sdk.launch.inputs.internal"
WANDB_RUN = "wandb.sdk.wandb_run:Run"

# "module:qualname" of each private callable autotimm calls or overrides -> the parameter
# names relied on, in order
SIGNATURES: dict[str, tuple[str, ...]] = {
    # overridden by LastCheckpoint: a hard link instead of a second write of the same state
    f"{_CHECKPOINT}._save_checkpoint": ("self", "trainer", "filepath"),
    f"{_CHECKPOINT}.{CHECKPOINT_SAVES_ON_TRAIN_EPOCH_END}": ("self", "trainer"),
    f"{_BAR}.{BAR_UPDATE}": ("self", "progress_bar_id", "current"),
    # overridden by autotimm's CSV logger's writer: only a metrics.csv is a previous log
    f"lightning.fabric.loggers.csv_logs:_ExperimentWriter.{CSV_CHECK_LOG_DIR}": ("self",),
    # overridden by autotimm's bar: the metrics are read (a GPU->host sync) only on the
    # steps that log them
    f"{_BAR}._update_metrics": ("self", "trainer", "pl_module"),
    # overridden by autotimm's bar: the display it starts gets the promptly ending thread
    f"{_BAR}._init_progress": ("self", "trainer"),
    # the base of Lightning's redraw thread, whose constructor autotimm's thread inherits
    "rich.live:_RefreshThread.__init__": ("self", "live", "refresh_per_second"),
    f"{LR_IN_STEP}.__init__": ("self", "o"),
    # called and overridden (re-sized schedulers: the lr at the warped position)
    f"torch.optim.lr_scheduler:CosineAnnealingLR.{CLOSED_FORM_LR}": ("self",),
    f"torch.optim.lr_scheduler:StepLR.{CLOSED_FORM_LR}": ("self",),
    f"torch.optim.lr_scheduler:MultiStepLR.{CLOSED_FORM_LR}": ("self",),
    # overridden by CosineRestarts (cosine_with_restarts re-sized on resume): every lr
    # timm's scheduler sets comes from it
    "timm.scheduler:CosineLRScheduler._get_lr": ("self", "t"),
    f"{WANDB_RUN}.{WANDB_JOB_INPUTS}": ("self",),
}

# autotimm's overrides of private hooks -> the hook each overrides (in SIGNATURES)
OVERRIDDEN: dict[str, str] = {
    "autotimm.training.callbacks:LastCheckpoint._save_checkpoint": (
        f"{_CHECKPOINT}._save_checkpoint"
    ),
    "autotimm.training.callbacks:RichProgressBar._update_metrics": f"{_BAR}._update_metrics",
    "autotimm.training.callbacks:RichProgressBar._init_progress": f"{_BAR}._init_progress",
    f"autotimm.optim.resizing_schedulers:_TorchRunSized.{CLOSED_FORM_LR}": (
        f"torch.optim.lr_scheduler:CosineAnnealingLR.{CLOSED_FORM_LR}"
    ),
    "autotimm.optim.resizing_schedulers:CosineRestarts._get_lr": (
        "timm.scheduler:CosineLRScheduler._get_lr"
    ),
    f"autotimm.app.loggers:RunDirectoryWriter.{CSV_CHECK_LOG_DIR}": (
        f"lightning.fabric.loggers.csv_logs:_ExperimentWriter.{CSV_CHECK_LOG_DIR}"
    ),
}


def locate(target: str) -> Any:
    """The object at "module:qualname" (importing the module)."""
    module, _, qualname = target.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def signature_problems(signatures: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Where an installed package no longer has a function with the parameters relied on
    (SIGNATURES by default)."""
    problems = []
    for target, expected in (SIGNATURES if signatures is None else signatures).items():
        try:
            found = tuple(inspect.signature(locate(target)).parameters)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{target}: missing ({type(exc).__name__}: {exc})")
            continue
        if found[: len(expected)] != expected:
            problems.append(f"{target}: parameters {found}, autotimm relies on {expected}")
    return problems


def lightning_refresh_thread() -> type | None:
    """Lightning's rich redraw thread class (None without rich or with a Lightning that
    has none: the bar then keeps its own thread)."""
    try:
        return locate(REFRESH_THREAD)
    except (ImportError, AttributeError):
        return None


def lr_in_step() -> Callable[[Any], AbstractContextManager]:
    """torch's "inside step()" context for a scheduler (a no-op one if torch drops it)."""
    try:
        return locate(LR_IN_STEP)
    except AttributeError:
        return lambda _: nullcontext()


def foreach_norm(tensors: list[Any]) -> list[Any]:
    """The norm of each tensor, in one fused call per device and dtype."""
    import torch

    return getattr(torch, FOREACH_NORM)(tensors)
