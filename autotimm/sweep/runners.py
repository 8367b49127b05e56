"""How a study's trials reach the launcher: in batches, or through autotimm's own pool.

`make_runner(plan, launcher)` picks: with the joblib launcher and several trials at once
(`DevicePlan.own_pool`), trials run in loky's reusable process pool, one future each, and a
new trial starts as soon as any ends; otherwise each batch goes through the launcher
(one trial at a time in process, SLURM job arrays, Ray tasks).
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from autotimm.devices import DevicePlan
from autotimm.sweep import plugin_api

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """A finished trial: its JobReturn, or the error that kept it from returning one."""

    trial: optuna.Trial
    ret: Any = None  # hydra.core.utils.JobReturn
    error: BaseException | None = None  # the launch itself failed (a worker died)


class Runner(Protocol):
    @property
    def running(self) -> int: ...

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None: ...

    def wait(self) -> list[Outcome]: ...

    def close(self) -> None: ...


class LauncherRunner:
    """Submitted trials are launched together, as one batch, by the configured launcher."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.pending: list[tuple[optuna.Trial, list[str]]] = []

    @property
    def running(self) -> int:
        return len(self.pending)

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None:
        self.pending.append((trial, overrides))

    def wait(self) -> list[Outcome]:
        batch, self.pending = self.pending, []
        trials = [t for t, _ in batch]
        try:
            returns = self.launcher.launch([o for _, o in batch], initial_job_idx=trials[0].number)
        except Exception as exc:
            log.warning("launching trials %s failed: %s", [t.number for t in trials], exc)
            return [Outcome(t, error=exc) for t in trials]
        return [Outcome(t, ret) for t, ret in zip(trials, returns, strict=True)]

    def close(self) -> None:
        pass


class PoolRunner:
    """Each trial runs the joblib launcher's job function in loky's reusable pool."""

    def __init__(self, launcher: Any, plan: DevicePlan) -> None:
        self._jobs = plugin_api.JoblibJobs(launcher)
        self._plan = plan
        self._futures: dict[concurrent.futures.Future, optuna.Trial] = {}

    @property
    def running(self) -> int:
        return len(self._futures)

    def _executor(self) -> Any:
        from joblib.externals.loky import get_reusable_executor

        # idle workers keep their GPU claim: never retire them while the sweep runs
        return get_reusable_executor(
            max_workers=self._plan.n_jobs, timeout=24 * 3600, env=self._plan.thread_env()
        )

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None:
        log.info("\t#%d : %s", trial.number, " ".join(o for o in overrides if "hydra." not in o))
        function, args = self._jobs.call(trial.number, overrides)
        self._futures[self._executor().submit(function, *args)] = trial

    def wait(self) -> list[Outcome]:
        done, _ = concurrent.futures.wait(
            list(self._futures), return_when=concurrent.futures.FIRST_COMPLETED
        )
        outcomes = []
        for future in done:
            trial = self._futures.pop(future)
            try:
                outcomes.append(Outcome(trial, future.result()))
            except Exception as exc:  # the worker died (killed, out of host memory, ...)
                outcomes.append(Outcome(trial, error=exc))
        return outcomes

    def close(self) -> None:
        for future in list(self._futures):
            future.cancel()


def make_runner(plan: DevicePlan, launcher: Any) -> Runner:
    return PoolRunner(launcher, plan) if plan.own_pool else LauncherRunner(launcher)
