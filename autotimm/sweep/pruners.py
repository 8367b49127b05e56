"""Optuna pruners that work across processes: Hyperband with a stable bracket per trial.

Optuna 2.10's `HyperbandPruner` puts a trial into a bracket by Python's `hash()` of
"<study name>_<trial number>". That hash is salted per process (PYTHONHASHSEED), so every
trial process of a sweep, each judging itself and reading the others' brackets, sees a
different split of the study into brackets: each trial competes against a random set of
the others, and replays of a sweep give other numbers on every run. CRC-32 of the same
string is the same everywhere (Optuna 3 made the same change), so all processes agree.

Imported by Hydra's `_target_` (conf/hydra/sweeper/pruner/hyperband.yaml) in the sweeper
and in each trial; importing it imports optuna, so `autotimm.sweep` does not import it.
"""

from __future__ import annotations

import zlib
from typing import Any

import optuna


def bracket_key(study_name: str, number: int) -> int:
    """The trial's bracket key: the same in every process (Optuna hashes the same string)."""
    return zlib.crc32(f"{study_name}_{number}".encode())


class HyperbandPruner(optuna.pruners.HyperbandPruner):
    """`optuna.pruners.HyperbandPruner` (same arguments) with a process-independent bracket."""

    def _get_bracket_id(self, study: Any, trial: Any) -> int:
        if len(self._pruners) == 0:
            return 0
        assert self._n_brackets is not None  # set with the pruners
        n = bracket_key(study.study_name, trial.number) % self._total_trial_allocation_budget
        for bracket_id in range(self._n_brackets):
            n -= self._trial_allocation_budgets[bracket_id]
            if n < 0:
                return bracket_id
        raise AssertionError("unreachable: the budgets sum to the total")
