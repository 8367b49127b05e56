"""OmegaConf resolvers the config tree uses (registered by train.py before Hydra starts)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def project_dir() -> str:
    """The checkout holding `conf/` and `sweeps/` (absolute, whatever the cwd)."""
    return str(Path(__file__).resolve().parents[1])


def auto_precision() -> str:
    """bf16-mixed on GPUs that support it, else full 32-bit precision."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def wandb_offline() -> bool:
    """Offline unless the user asked W&B to go online through WANDB_MODE."""
    return os.environ.get("WANDB_MODE", "offline").lower() not in ("online", "run")


def run_name(override_dirname: str | None) -> str:
    """A W&B run name from the command-line overrides ('default' when there are none)."""
    name = (override_dirname or "").strip()
    return name[:120] if name else "default"


def _first_objective(value):
    from autotimm.records.objectives import first

    return first(value)


def _directions(mode):
    from autotimm.records.objectives import directions

    return directions(mode)


def register_resolvers() -> None:
    """Register once; safe to call again (tests compose configs many times)."""
    resolvers = {
        "abspath": lambda path: os.path.abspath(os.path.expanduser(str(path))),
        "autotimm.project_dir": project_dir,
        "autotimm.precision": auto_precision,
        "autotimm.wandb_offline": wandb_offline,
        "autotimm.run_name": run_name,
        "autotimm.pid": os.getpid,
        # optimized_metric/optimized_mode may be lists (multi-objective sweeps)
        "autotimm.first": _first_objective,
        "autotimm.directions": _directions,
    }
    # cached: a joblib worker resolving the sweep dir again must get the launcher's pid
    cached = {"autotimm.pid"}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=name in cached)
