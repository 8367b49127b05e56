"""The sweepers named in conf/hydra/sweeper/ (Hydra only loads plugins from hydra_plugins).

- AutotimmOptunaSweeper: hydra-optuna-sweeper's Optuna sweeper with autotimm's study
  handling (autotimm.sweep.study: continue up to n_trials, resume, failures, one trial
  per GPU, no batch waits).
- AutotimmBasicSweeper: Hydra's basic (grid) sweeper, with one trial per GPU and a
  summary of failed runs instead of stopping at the first one.

Heavy imports (optuna, the study code) happen when a sweep starts, not at plugin discovery.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra._internal.core_plugins import basic_sweeper
from hydra.core.utils import JobStatus
from hydra.plugins import sweeper as sweeper_plugin
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class AutotimmOptunaSweeper(sweeper_plugin.Sweeper):
    """Same configuration as hydra-optuna-sweeper's `optuna` sweeper."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from autotimm.sweep.study import StudySweeper

        self.sweeper = StudySweeper(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)


class AutotimmBasicSweeper(basic_sweeper.BasicSweeper):
    """Hydra's basic sweeper: one trial per GPU, and every run of the grid goes ahead."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from autotimm.devices import plan_for_sweep

        plan = plan_for_sweep(config)
        if OmegaConf.select(config, "hydra.launcher.n_jobs") is not None:
            with open_dict(config):
                config.hydra.launcher.n_jobs = plan.n_jobs
        log.info("Grid sweep: %s", plan.describe())
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from autotimm.run_wrapper import failure_reason

        launcher = self.launcher
        failures: list[str] = []

        class _Collecting:
            """Wraps the launcher: failed runs are listed, not raised one by one."""

            def launch(self, job_overrides, initial_job_idx):
                returns = launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
                varying = _varying(job_overrides)
                for ret in returns:
                    if ret.status == JobStatus.FAILED:
                        cell = " ".join(o for o in ret.overrides or [] if o in varying)
                        failures.append(
                            f"{cell or ret.overrides}: {failure_reason(ret._return_value)}"
                        )
                        ret.status = JobStatus.COMPLETED  # the grid goes on
                        ret._return_value = None
                return returns

        self.launcher = _Collecting()
        try:
            returns = super().sweep(arguments)
        finally:
            self.launcher = launcher
        if failures:
            log.warning("%d run(s) of the grid failed:", len(failures))
            for line in failures:
                log.warning("  %s", line)
            raise RuntimeError(
                f"{len(failures)} run(s) of the grid failed (listed above; each run's "
                "results.json says why)"
            )
        return returns


def _varying(job_overrides: Any) -> set[str]:
    """The overrides that differ between the jobs of a batch (the grid's cells)."""
    if len(job_overrides) < 2:
        return {o for job in job_overrides for o in job}
    common = set(job_overrides[0]).intersection(*map(set, job_overrides[1:]))
    return {o for job in job_overrides for o in job} - common
