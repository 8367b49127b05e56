"""The Trainer's profiler when none is configured: Lightning's pass-through one, cheaper.

Lightning wraps every hook call in `trainer.profiler.profile(name)`: about 85 times a
training step with the default callbacks. Its default `PassThroughProfiler` records
nothing but builds a generator-based context manager each time (about 1 us apiece, 0.07 ms
a step: a few percent of a small-image CPU step's framework budget). This one hands back
one shared no-op context instead. `trainer.profiler=simple` (or any profiler) replaces it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = nullcontext()  # reentrant and reusable: enters and exits without state


class QuietProfiler(PassThroughProfiler):
    """Records nothing, like Lightning's default, at no cost per profiled call."""

    def profile(self, action_name: str) -> AbstractContextManager:
        return _NOTHING
