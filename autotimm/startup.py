"""A process's start-up: the garbage collector while importing, and Lightning's import.

1. The collector kept off the start-up and the exit of train.py (`defer_collections`,
   `freeze_imported`).
2. Lightning imported without the 0.6 s of `scipy.signal` nothing in a run uses
   (`scipy_signal_deferred`), and without the per-step NVML probe it switches on where NVML
   cannot load (`drop_nvml_check_without_nvml`).

## 1. The garbage collector

Importing torch, timm, Lightning, Hydra and their dependencies leaves about 500,000
long-lived objects (modules, classes, functions) and each full collection walks all of
them. Measured on the project's 2-core CPU: the eight full collections the imports set off
took 0.9 s and found almost nothing (about 20 objects each); at exit the interpreter's own
collections over the same objects took another 1.0 s.

So train.py defers collections while it imports (a high first threshold: fewer young
collections, hence no full ones; garbage is still collected), and once the imports are done
`freeze_imported` moves every object alive into the permanent generation (`gc.freeze`, the
standard library's tool for long-lived objects) and puts the thresholds back: later
collections, and those at exit, walk only what the run itself makes. A sweep's own process
does the same at the multirun's start when its trials run in other processes
(autotimm.sweep.multirun_checks); with Hydra's basic launcher its first trial does it. Only
processes that called `defer_collections` are changed, so a notebook or a test calling
`autotimm.app.run` keeps its collector as it was.

## 2. Lightning's import

Lightning's import without the 0.6 s of `scipy.signal` that nothing in a run uses, and
without the per-step NVML probe it switches on (`drop_nvml_check_without_nvml`).

torchmetrics (which Lightning imports) imports `scipy.signal` whenever scipy is installed
(optuna and scikit-learn bring it), only to look up `scipy.signal.hamming` for a
third-party audio package (torchmetrics issue #3457; PR #3459 would make it lazy). On the
project's 2-core CPU that import takes 0.6 s of every run's start (it pulls in scipy.stats
and scipy.interpolate), more than the rest of Lightning's own modules.

`scipy_signal_deferred()` gives torchmetrics' import a stand-in `scipy.signal` that has the
one name it looks up, and takes it away again afterwards: the first real
`import scipy.signal` later imports the real module as usual. What is lost: torchmetrics'
alias `scipy.signal.hamming` for scipy >= 1.13 (used only by the `srmrpy` package behind its
SRMR speech metric; `scipy.signal.windows.hamming` is the real function).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

# young objects allowed before a collection while importing (the default is 700): the
# imports make about 1 million, so a full collection (every 100 young ones) never comes
_IMPORT_THRESHOLD = 50_000
_deferred_thresholds: tuple[int, ...] | None = None
_frozen = False  # once per process: a second freeze would keep an earlier run's garbage


def defer_collections() -> None:
    """Raise the collector's first threshold until `freeze_imported` (train.py calls it
    before its other imports); nothing once this process has frozen its imports."""
    global _deferred_thresholds
    if _deferred_thresholds is None and not _frozen:
        _deferred_thresholds = gc.get_threshold()
        gc.set_threshold(_IMPORT_THRESHOLD, *_deferred_thresholds[1:])


def freeze_imported() -> None:
    """Freeze what the imports made and restore the thresholds; once, and only after
    `defer_collections` (an in-process sweep's later trials, notebooks: nothing happens).

    Call it before a run makes its own objects: frozen objects are never collected, so a
    trial's model frozen here would stay in memory for the rest of a sweep. Garbage that
    the start-up left in reference cycles is frozen with the rest: measured at this point
    of a default run, a full collection (0.3 s) would have found 50 objects.
    """
    global _deferred_thresholds, _frozen
    if _deferred_thresholds is not None:
        gc.freeze()
        gc.set_threshold(*_deferred_thresholds)
        _deferred_thresholds, _frozen = None, True


_NAME = "scipy.signal"


def _hamming(*args, **kwargs):
    """scipy's Hamming window (what torchmetrics would alias), imported when called."""
    from scipy.signal.windows import hamming

    return hamming(*args, **kwargs)


@contextmanager
def scipy_signal_deferred() -> Iterator[None]:
    """Inside: `import scipy.signal` gives a stand-in with `hamming` only. Nothing changes
    when scipy is missing or `scipy.signal` is already imported."""
    if _NAME in sys.modules or importlib.util.find_spec("scipy") is None:
        yield
        return
    import scipy

    stand_in = types.ModuleType(_NAME, "stand-in while torchmetrics imports (autotimm)")
    stand_in.hamming = _hamming
    sys.modules[_NAME] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(_NAME) is stand_in:
            del sys.modules[_NAME]
        if scipy.__dict__.get("signal") is stand_in:
            del scipy.signal


_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def drop_nvml_check_without_nvml() -> bool:
    """Undo Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` where NVML cannot load.

    Lightning sets it at import so that `torch.cuda.is_available()` asks NVML instead of
    initialising CUDA (safe to fork afterwards). Without libnvidia-ml (CPU machines with a
    CUDA build of torch), torch then tries a failing `dlopen` on every call and falls back
    to the CUDA runtime's count, the same answer as with the variable unset. Adam and AdamW
    call it every optimizer step (about 0.04 ms; timm's own train.py does not pay it).
    Only CUDA builds of torch are changed (ROCm's fork-safe count goes through amdsmi).
    Returns whether the variable was dropped.
    """
    if os.environ.get(_NVML_CHECK) != "1" or sys.platform != "linux":
        return False
    import torch

    if torch.version.cuda is None:  # CPU-only build: no probe; ROCm: torch asks amdsmi
        return False
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # the library torch's check loads
    except OSError:
        del os.environ[_NVML_CHECK]
        return True
    return False
