"""The sweepers named in conf/hydra/sweeper/ (Hydra only loads plugins from hydra_plugins).

- AutotimmOptunaSweeper: hydra-optuna-sweeper's Optuna sweeper with autotimm's study
  handling (autotimm.sweep.study: continue up to n_trials, resume, failures, one trial
  per GPU, no batch waits); its schema is in config.py.
- AutotimmBasicSweeper: Hydra's basic (grid) sweeper, with one trial per GPU and a
  summary of failed runs instead of stopping at the first one.

Both take their device plan (trials at once, GPUs) from autotimm.sweep.devices, and reach
Hydra's internals only through autotimm.sweep.plugin_api. Heavy imports (optuna, the
study code) happen when a sweep starts, not at plugin discovery.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.plugins import sweeper as sweeper_plugin
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from autotimm.records.results import RESULTS_FILE
from autotimm.sweep import plugin_api

log = logging.getLogger(__name__)


class AutotimmOptunaSweeper(sweeper_plugin.Sweeper):
    """hydra-optuna-sweeper's `optuna` sweeper configuration, less n_jobs (see config.py)."""

    def __init__(self, **settings: Any) -> None:
        """The keys of AutotimmOptunaSweeperConf (config.py), as StudySweeper takes them."""
        from autotimm.sweep.study import StudySweeper

        self.sweeper = StudySweeper(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        with setup_errors_reported():
            self.sweeper.setup(
                hydra_context=hydra_context, task_function=task_function, config=config
            )

    def sweep(self, arguments: list[str]) -> None:
        with setup_errors_reported():
            return self.sweeper.sweep(arguments)


def setup_errors_reported() -> Any:
    """A sweep that cannot start as configured (autotimm.sweep.engine_checks: storage,
    engine, study identity, bad sweep values) exits 1 with one short message, as single
    runs do; HYDRA_FULL_ERROR=1 shows the traceback."""
    from autotimm.user_errors import user_errors_reported

    return user_errors_reported(trial_raises=False)


class AutotimmBasicSweeper(plugin_api.basic_sweeper_class()):  # type: ignore[misc]
    """Hydra's basic sweeper: one trial per GPU, and every run of the grid goes ahead."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from autotimm.sweep.devices import plan_for_sweep

        plan = plan_for_sweep(config)  # before the launcher reads n_jobs
        log.info("Grid sweep: %s", plan.describe())
        with setup_errors_reported():
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from autotimm.records.results import failure_reason

        launcher = self.launcher
        failures: list[str] = []

        class _Collecting:
            """Wraps the launcher: failed runs are listed, not raised one by one."""

            def launch(self, job_overrides, initial_job_idx):
                returns = launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
                varying = _varying(job_overrides)
                for ret in returns:
                    error = plugin_api.job_error(ret)
                    if error is not None:
                        cell = " ".join(o for o in ret.overrides or [] if o in varying)
                        failures.append(f"{cell or ret.overrides}: {failure_reason(error)}")
                        plugin_api.let_job_pass(ret)  # the grid goes on
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
                f"{RESULTS_FILE} says why)"
            )
        return returns


def _varying(job_overrides: Any) -> set[str]:
    """The overrides that differ between the jobs of a batch (the grid's cells)."""
    if len(job_overrides) < 2:
        return {o for job in job_overrides for o in job}
    common = set(job_overrides[0]).intersection(*map(set, job_overrides[1:]))
    return {o for job in job_overrides for o in job} - common
