"""Lightning's import without the 0.6 s of `scipy.signal` that nothing in a run uses, and
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

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

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
