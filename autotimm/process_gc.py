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
collections, and those at exit, walk only what the run itself makes. Only processes that
called `defer_collections` are changed, so a notebook or a test calling `autotimm.run`
keeps its collector as it was.
"""

from __future__ import annotations

import gc

# young objects allowed before a collection while importing (the default is 700): the
# imports make about 1 million, so a full collection (every 100 young ones) never comes
_IMPORT_THRESHOLD = 50_000
_deferred_thresholds: tuple[int, ...] | None = None


def defer_collections() -> None:
    """Raise the collector's first threshold until `freeze_imported` (train.py's first line)."""
    global _deferred_thresholds
    if _deferred_thresholds is None:
        _deferred_thresholds = gc.get_threshold()
        gc.set_threshold(_IMPORT_THRESHOLD, *_deferred_thresholds[1:])


def freeze_imported() -> None:
    """Freeze what the imports made and restore the thresholds; once, and only after
    `defer_collections` (an in-process sweep's later trials, notebooks: nothing happens).

    Call it before a run makes its own objects: frozen objects are never collected, so a
    trial's model frozen here would stay in memory for the rest of a sweep.
    """
    global _deferred_thresholds
    if _deferred_thresholds is not None:
        gc.freeze()
        gc.set_threshold(*_deferred_thresholds)
        _deferred_thresholds = None
