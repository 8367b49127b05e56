"""Small shared helpers: dotted-path imports, plain-container conversion, Hydra's run state."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(dotted_path: str) -> Any:
    """Import `package.module.Name`; raise ValueError naming the path when it fails."""
    # Not hydra.utils.get_object: on a bad path it logs an ERROR line of its own, then raises
    # a 3-line ImportError, where autotimm's checks give one short message; 7.6 us vs 1.9 us
    # a call, at config time only (benchmarks/library_costs.py --clock cpu, shared 2-core x86
    # CPU, 2026-12-07).
    module_name, _, attr = dotted_path.rpartition(".")
    if not module_name:
        raise ValueError(f"{dotted_path!r} is not a dotted path like 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot import {dotted_path!r}: {exc}") from exc


# The packages whose classes and functions autotimm's configs may name as `_target_`. Hydra
# 1.4 asks every instantiate() for such a list (from 1.5 a target outside it is refused): a
# config can name any importable function, so a trusted list says which code it may run.
# Your own package: AUTOTIMM_TRUSTED_TARGETS="mypackage.*,other.module.Class".
TRUSTED_TARGETS = (
    "autotimm.*",
    "timm.*",
    "torch.*",
    "torchvision.*",
    "torchmetrics.*",
    "lightning.*",
    "optuna.*",
    "hydra_plugins.*",
    "wandb.*",
)
ENV_TRUSTED_TARGETS = "AUTOTIMM_TRUSTED_TARGETS"


def trusted_targets() -> list[str]:
    """TRUSTED_TARGETS and those of $AUTOTIMM_TRUSTED_TARGETS (comma-separated)."""
    import os

    extra = [t.strip() for t in os.environ.get(ENV_TRUSTED_TARGETS, "").split(",") if t.strip()]
    return [*TRUSTED_TARGETS, *extra]


def trusting_targets() -> Any:
    """A context in which Hydra's instantiate() may call the trusted targets."""
    from hydra.utils import execution_whitelist

    return execution_whitelist(trusted_targets())


def to_plain(value: Any) -> Any:
    """Turn OmegaConf containers (from Hydra) into plain dicts/lists; leave others alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def hydra_config() -> Any | None:
    """Hydra's config of the running job (None outside a Hydra app: notebooks, tests)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    """Whether this process runs a job of a multirun (a sweep trial)."""
    from hydra.types import RunMode

    hc = hydra_config()
    return hc is not None and hc.mode == RunMode.MULTIRUN
