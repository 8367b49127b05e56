"""A study's identity: one study holds trials of one set of fixed settings.

A sweep's fixed settings are its command line's and `hydra.sweeper.params`' values that
are not swept (`backbone=vit_s16`, `data=image_folder`, `trainer.max_epochs=20`, ...).
Trials run with other fixed settings are not comparable, so a sweep continues a stored
study only with the settings the study was started with; otherwise it stops before
running anything, saying how to continue the study (its settings) or start another one
(`sweep.name=...`, which names the study and its folder). Settings that do not change
what a trial trains (where it logs, how it shows progress, how many trials run at once,
the sweep's own bookkeeping) are not part of the identity.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import optuna

from autotimm.sweep.engine_checks import SweepSetupError
from autotimm.sweep.storage import masked
from autotimm.sweep.trials import ATTR_FIXED

ATTR_IDENTITY = "fixed_settings"  # study user attribute: the settings its trials share
NOT_IDENTITY = (
    "hydra.",
    "sweeps",  # +sweeps=NAME: the sweep itself (its name names the study)
    "paths.",
    "logger",
    "callbacks",
    "print_config",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "sweep.n_jobs",
    "sweep.gpus",
    "sweep.cpu_workers",
    "sweep.simulate_gpus",
    "sweep.lock_dir",
    "sweep.enqueue",
    "sweep.warm_start_from",
    "sweep.warm_start_top_k",
    "sweep.dashboard",
)
DEFAULT = "(default)"


def identity(fixed: dict[str, Any]) -> dict[str, str]:
    """The fixed settings that make trials comparable, as text."""
    found = {}
    for key, value in fixed.items():
        name = key.lstrip("+~")
        if not name.startswith(NOT_IDENTITY):
            text = str(value)  # as typed (Hydra turns a typed `false` into False)
            found[name] = text.lower() if text in ("True", "False") else text
    return found


def stored_identity(study: optuna.Study) -> dict[str, str] | None:
    """The settings of the study's trials (None: a new study). Studies from before this
    attribute: the first trial's recorded fixed settings (none recorded: none given)."""
    stored = study.user_attrs.get(ATTR_IDENTITY)
    if stored is not None:
        return dict(stored)
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return None
    return identity(trials[0].user_attrs.get(ATTR_FIXED, {}))


def check_identity(study: optuna.Study, storage: Any, fixed: dict[str, Any]) -> None:
    """Record the settings of a new study; refuse to continue one with other settings."""
    now = identity(fixed)
    before = stored_identity(study)
    if before is None or before == now:
        if ATTR_IDENTITY not in study.user_attrs:
            study.set_user_attr(ATTR_IDENTITY, now)
        return
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    shown = ", ".join(f"{k}: {before.get(k, DEFAULT)} -> {now.get(k, DEFAULT)}" for k in changed)
    original = " ".join(f"{k}={v}" for k, v in sorted(before.items())) or "no fixed settings"
    raise SweepSetupError(
        f"study {study.study_name!r} ({masked(storage)}) holds trials run with other fixed "
        f"settings ({shown}); trials of different settings are not comparable, so this sweep "
        f"does not add to it. To continue that study, run it with its settings ({original}); "
        f"to start a new study (and folder) with these: sweep.name="
        f"{suggested_name(study.study_name, now, changed)}"
    )


def suggested_name(name: str, now: dict[str, str], changed: list[str]) -> str:
    """The sweep's name with its changed values (`lr_mixup_ls-vit_s16-image_folder`), or
    with a short digest of its settings when more than two changed."""
    parts = [now[k] for k in changed if k in now] or ["defaults"]
    if len(parts) > 2:
        text = json.dumps(now, sort_keys=True).encode()
        return f"{name}-{hashlib.sha256(text).hexdigest()[:8]}"
    tail = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part).strip("_") for part in parts)
    return f"{name}-{tail}"
