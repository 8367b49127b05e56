"""How a study's trials reach their engine: each on its own as soon as a slot frees, or in batches.

`autotimm.sweep.launchers.make_runner(plan, launcher)` picks by the launcher's class; every
runner keeps up to `plan.n_jobs` trials running and starts a new one as soon as any ends
(`submit`, `wait`):

- joblib with several trials at once (`DevicePlan.own_pool`): loky's reusable process
  pool, one future per trial (PoolRunner, here);
- hydra-submitit-launcher (`hydra/launcher=slurm_gpu`, `submitit_local`): one submitit
  job per trial (autotimm.sweep.runners_submitit);
- hydra-ray-launcher (`hydra/launcher=ray_gpu`): one Ray task per trial, `ray.wait`
  (autotimm.sweep.runners_ray);
- any other launcher (Hydra's basic one, joblib one by one): each batch through the
  launcher (LauncherRunner).

Each engine runs the trial exactly as its launcher would (the launcher's own job function
and config keys), each trial in its own run directory.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from autotimm.sweep import plugin_api
from autotimm.sweep.trials import ATTR_JOB

if TYPE_CHECKING:  # pragma: no cover
    from autotimm.sweep.devices import DevicePlan

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
        log_submit(trial, overrides, "a worker process")
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


class EngineRunner:
    """One job or task per trial on an engine (submitit, Ray); a subclass says how to
    start one (`_start`), await the first that ends (`_await`), read its JobReturn
    (`_result`) and cancel one (`_cancel`)."""

    def __init__(self) -> None:
        self._running: list[tuple[Any, optuna.Trial]] = []  # (job or task, its trial)
        self._refused: list[Outcome] = []  # trials the engine would not take

    @property
    def running(self) -> int:
        return len(self._running) + len(self._refused)

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None:
        try:
            handle = self._start(trial.number, overrides)
        except Exception as exc:  # e.g. sbatch refused the job: the trial fails, the sweep goes on
            log.warning("submitting trial %d failed: %s", trial.number, exc)
            self._refused.append(Outcome(trial, error=exc))
            return
        log_submit(trial, overrides, self._describe(handle))
        job = self._job_ref(handle)
        if job is not None:  # a rerun after this sweep was killed cancels it (recovery)
            trial.set_user_attr(ATTR_JOB, job)
        self._running.append((handle, trial))

    def wait(self) -> list[Outcome]:
        """The trials that ended: at least one, as soon as any did."""
        if self._refused:
            refused, self._refused = self._refused, []
            return refused
        ended = {id(h) for h in self._await([h for h, _ in self._running])}
        done = [(h, trial) for h, trial in self._running if id(h) in ended]
        self._running = [(h, trial) for h, trial in self._running if id(h) not in ended]
        return [self._outcome(h, trial) for h, trial in done]

    def _outcome(self, handle: Any, trial: optuna.Trial) -> Outcome:
        try:
            return Outcome(trial, self._result(handle))
        except Exception as exc:  # it died without returning (killed, out of memory, node lost)
            where = self._describe(handle)
            log.warning("trial %d (%s) ended without a result: %s", trial.number, where, exc)
            return Outcome(trial, error=exc)

    def close(self) -> None:
        """Cancel what still runs (the sweep stopped early): no orphan jobs hold GPUs."""
        for handle, trial in self._running:
            log.warning("cancelling trial %d (%s)", trial.number, self._describe(handle))
            try:
                self._cancel(handle)
            except Exception as exc:  # already gone
                log.warning("could not cancel trial %d: %s", trial.number, exc)
        self._running = []

    def _start(self, number: int, overrides: list[str]) -> Any:
        raise NotImplementedError

    def _describe(self, handle: Any) -> str:
        return str(handle)

    def _job_ref(self, handle: Any) -> str | None:
        """`engine:id` of a job that outlives the sweep process (None: it dies with it)."""
        return None

    def _await(self, handles: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        raise NotImplementedError

    def _cancel(self, handle: Any) -> None:
        raise NotImplementedError


def log_submit(trial: optuna.Trial, overrides: list[str], where: str) -> None:
    shown = " ".join(o for o in overrides if "hydra." not in o)
    log.info("\t#%d : %s (%s)", trial.number, shown, where)
