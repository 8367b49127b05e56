"""The schema of `hydra/sweeper=autotimm_optuna` (conf/hydra/sweeper/autotimm_optuna.yaml).

hydra-optuna-sweeper's `optuna` schema without its `n_jobs`: how many trials run at once
is `sweep.n_jobs` alone (autotimm.sweep.devices), so `hydra.sweeper.n_jobs=...` fails at
composition instead of being silently ignored. Hydra imports this module at plugin
discovery, which registers the schema in its ConfigStore.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class AutotimmOptunaSweeperConf:
    """The `optuna` sweeper's keys (same meaning and defaults), less n_jobs."""

    _target_: str = "hydra_plugins.autotimm_sweeps.sweepers.AutotimmOptunaSweeper"
    # Any, not the plugin's SamplerConfig: Hydra's plugin scan executes the plugin's config
    # module again, and a sampler of the new class would fail a check against the old one
    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|grid|cmaes|...
    # hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband|threshold|
    # patient|best_so_far
    pruner: Any = None
    direction: Any = "minimize"  # or maximize, or a list of them
    # null: journal:<sweep dir>/study.journal; or journal:PATH, sqlite:///PATH, postgresql://...
    storage: Any | None = None
    study_name: str | None = None
    n_trials: int = 20  # the study's finished trials to reach (a rerun continues)
    max_failure_rate: float = 0.0  # stop once more than this fraction of trials failed
    params: dict[str, str] | None = None
    custom_search_space: str | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="autotimm_optuna_schema",
    node=AutotimmOptunaSweeperConf,
    provider="autotimm",
    replace=True,  # Hydra's plugin scan executes this module a second time
)
