"""Python's cyclic garbage collector kept off the start-up and the exit of train.py.

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
(autotimm.multirun_checks); with Hydra's basic launcher its first trial does it. Only
processes that called `defer_collections` are changed, so a notebook or a test calling
`autotimm.run` keeps its collector as it was.
"""

from __future__ import annotations

import gc

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
