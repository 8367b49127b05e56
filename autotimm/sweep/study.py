"""The Optuna study behind `python train.py -m +sweeps=<name>`: never lost, failure-tolerant.

`StudySweeper` is hydra-optuna-sweeper's sweeper (search space syntax, samplers,
`optimization_results.yaml`) with autotimm's study handling:

- storage: the study lives in an RDB (SQLite under `outputs/sweeps/<name>/study.db` by
  default, a PostgreSQL URL for several machines); relative SQLite paths are made absolute.
- continue up to `n_trials`: re-running the same command counts the study's finished
  trials and runs only the missing ones (hydra-optuna-sweeper would add n_trials more).
  Resumed studies reseed the sampler (seed + number of trials), so no values repeat.
- resume after a kill: trials left RUNNING by a sweep process that no longer exists (or
  whose heartbeat stopped, for sweeps driven from other machines) are marked failed as
  "interrupted" and their values queued to run again; finished trials are kept.
- failures: a trial that raises (bad values, NaN loss, out of memory, a dead worker) is
  told to Optuna as FAIL with its reason in the trial's user attributes; the sweep goes on
  until more than `max_failure_rate` of its finished trials failed. The summary (log and
  `optimization_results.yaml`) lists every failure.
- every GPU busy: one trial per GPU (autotimm.devices). With the joblib launcher and
  several trials at once, a new trial starts as soon as any trial ends (no batch waits).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import FrozenTrial, TrialState

from autotimm.results import read_results
from autotimm.devices import DevicePlan, plan_for_sweep
from autotimm.run_wrapper import failure_reason

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0  # sweeps record a heartbeat on their running trials this often
STALE_AFTER_S = 600.0  # a RUNNING trial with no heartbeat for this long was interrupted
MIN_TRIALS_FOR_RATE = 3  # max_failure_rate is judged once this many trials finished

# trial user attributes
ATTR_HOST, ATTR_PID, ATTR_HEARTBEAT = "sweep_host", "sweep_pid", "sweep_heartbeat"
ATTR_FAILURE, ATTR_INTERRUPTED, ATTR_RUN_DIR = "failure", "interrupted", "run_dir"


class SweepFailedError(RuntimeError):
    """Too many trials failed (more than max_failure_rate of the finished ones)."""


def trial_dir_name(number: int) -> str:
    return f"trial_{number:04d}"


def absolute_storage(storage: Any) -> Any:
    """SQLite URLs with an absolute path (and its folder created); other URLs unchanged."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return storage
    path = storage[len("sqlite:///") :]
    if path in ("", ":memory:"):
        return storage
    path = os.path.abspath(os.path.expanduser(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def masked(storage: Any) -> str:
    """The storage URL without its password (for logs and results files)."""
    text = str(storage)
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).__repr__() if "://" in text else text
    except Exception:
        return text


@dataclass
class StudyCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # genuine failures (not interruptions)
    interrupted: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """Trials that count against n_trials."""
        return self.complete + self.pruned + self.failed


def count_trials(trials: Sequence[FrozenTrial]) -> StudyCounts:
    counts = StudyCounts()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.state == TrialState.FAIL:
            if trial.user_attrs.get(ATTR_INTERRUPTED):
                counts.interrupted += 1
            else:
                counts.failed += 1
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
    return counts


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial: FrozenTrial, now: float | None = None, host: str | None = None) -> bool:
    """A RUNNING trial whose sweep process is gone (this host) or silent (any host)."""
    if trial.state != TrialState.RUNNING:
        return False
    attrs = trial.user_attrs
    if ATTR_PID not in attrs:
        return False  # not started by an autotimm sweep: leave it alone
    host = socket.gethostname() if host is None else host
    if attrs.get(ATTR_HOST) == host and not _pid_alive(int(attrs[ATTR_PID])):
        return True
    beat = attrs.get(ATTR_HEARTBEAT)
    now = time.time() if now is None else now
    return beat is not None and now - float(beat) > STALE_AFTER_S


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials of dead sweep processes failed ("interrupted") and queue their values again."""
    storage = study._storage
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial):
            continue
        reason = "interrupted: the sweep process ended while this trial ran (killed or crashed)"
        try:
            storage.set_trial_user_attr(trial._trial_id, ATTR_FAILURE, reason)
            storage.set_trial_user_attr(trial._trial_id, ATTR_INTERRUPTED, True)
            if not storage.set_trial_state(trial._trial_id, TrialState.FAIL):
                continue  # another sweep process recovered it first
        except RuntimeError:  # finished meanwhile
            continue
        if trial.params:
            with warnings.catch_warnings():  # enqueue_trial is "experimental" in optuna 2.x
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(dict(trial.params))
        recovered.append(trial.number)
    if recovered:
        log.warning(
            "Trial(s) %s were interrupted by an earlier sweep that stopped; they are marked "
            "failed (interrupted) and their values run again",
            ", ".join(map(str, recovered)),
        )
    return recovered


class _Heartbeat:
    """Record a heartbeat on running trials, so other sweep processes can tell they live."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self.trials: dict[int, optuna.Trial] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, trial: optuna.Trial) -> None:
        with self._lock:
            self.trials[trial.number] = trial

    def remove(self, trial: optuna.Trial) -> None:
        with self._lock:
            self.trials.pop(trial.number, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                trials = list(self.trials.values())
            for trial in trials:
                try:
                    trial.set_user_attr(ATTR_HEARTBEAT, time.time())
                except Exception:  # finished meanwhile, or the DB is busy: next beat
                    pass


@dataclass
class _Outcome:
    trial: optuna.Trial
    ret: JobReturn | None = None
    error: BaseException | None = None  # the launch itself failed (a worker died)


@dataclass
class _Runner:
    """Starts trials and hands back finished ones."""

    sweeper: StudySweeper
    pending: list[tuple[optuna.Trial, list[str]]] = field(default_factory=list)

    @property
    def running(self) -> int:
        return len(self.pending)

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None:
        self.pending.append((trial, overrides))

    def wait(self) -> list[_Outcome]:
        """Launch the submitted trials as one batch through the configured launcher."""
        batch, self.pending = self.pending, []
        trials = [t for t, _ in batch]
        try:
            returns = self.sweeper.launcher.launch(
                [o for _, o in batch], initial_job_idx=trials[0].number
            )
        except Exception as exc:
            log.warning("launching trials %s failed: %s", [t.number for t in trials], exc)
            return [_Outcome(t, error=exc) for t in trials]
        return [_Outcome(t, ret) for t, ret in zip(trials, returns, strict=True)]

    def close(self) -> None:
        pass


class _PoolRunner(_Runner):
    """joblib launcher, several trials at once: a new trial starts as soon as one ends.

    Runs Hydra's joblib job function in loky's reusable process pool, one future per trial.
    """

    def __init__(self, sweeper: StudySweeper) -> None:
        super().__init__(sweeper)
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        setup_globals()
        config = sweeper.config
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        self._singleton_state = Singleton.get_state()
        self._futures: dict[concurrent.futures.Future, optuna.Trial] = {}
        self._executor = None

    @property
    def running(self) -> int:
        return len(self._futures)

    def _get_executor(self):
        from joblib.externals.loky import get_reusable_executor

        n_jobs = self.sweeper.plan.n_jobs
        threads = str(max(1, (os.cpu_count() or 1) // n_jobs))
        env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        # idle workers keep their GPU claim: never retire them while the sweep runs
        return get_reusable_executor(max_workers=n_jobs, timeout=24 * 3600, env=env)

    def submit(self, trial: optuna.Trial, overrides: list[str]) -> None:
        from hydra_plugins.hydra_joblib_launcher._core import execute_job

        launcher = self.sweeper.launcher
        log.info("\t#%d : %s", trial.number, " ".join(o for o in overrides if "hydra." not in o))
        future = self._get_executor().submit(
            execute_job,
            trial.number,
            overrides,
            launcher.hydra_context,
            launcher.config,
            launcher.task_function,
            self._singleton_state,
        )
        self._futures[future] = trial

    def wait(self) -> list[_Outcome]:
        done, _ = concurrent.futures.wait(
            list(self._futures), return_when=concurrent.futures.FIRST_COMPLETED
        )
        outcomes = []
        for future in done:
            trial = self._futures.pop(future)
            try:
                outcomes.append(_Outcome(trial, future.result()))
            except Exception as exc:  # the worker died (killed, out of host memory, ...)
                outcomes.append(_Outcome(trial, error=exc))
        return outcomes

    def close(self) -> None:
        for future in list(self._futures):
            future.cancel()


class StudySweeper(OptunaSweeperImpl):
    """hydra-optuna-sweeper with autotimm's study handling (see the module doc)."""

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.plan: DevicePlan = plan_for_sweep(config)
        self.n_jobs = self.plan.n_jobs
        if OmegaConf.select(config, "hydra.launcher.n_jobs") is not None:
            with open_dict(config):
                config.hydra.launcher.n_jobs = self.plan.n_jobs
        self.sampler_config = OmegaConf.select(config, "hydra.sweeper.sampler")
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the sweep ---------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config()
        params_conf.extend(arguments)
        distributions, fixed_params = create_params_from_overrides(params_conf)
        if self.search_space_distributions:
            distributions = {**self.search_space_distributions, **distributions}
        for name in fixed_params:
            distributions.pop(name, None)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError(
                f"autotimm sweeps optimise one objective (optimized_metric); got {directions}"
            )
        is_grid = (
            isinstance(self.sampler, functools.partial)
            and self.sampler.func == optuna.samplers.GridSampler
        )
        if is_grid:
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))

        storage = self._storage()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != [d.lower() for d in directions]:
            raise ValueError(
                f"study {study.study_name!r} in {masked(self.storage)} optimises {stored}, "
                f"this sweep asks for {directions}; use another sweep.name for a new study"
            )
        recover_interrupted(study)
        if not is_grid:
            self._reseed(study)
        self._warn_on_changed_settings(study, fixed_params)

        counts = count_trials(study.get_trials(deepcopy=False))
        log.info(
            "Study %s (%s): %d of n_trials=%d finished (%d complete, %d failed), %d running "
            "elsewhere; sampler %s; %s",
            study.study_name,
            masked(self.storage),
            counts.finished,
            self.n_trials,
            counts.complete,
            counts.failed,
            counts.running,
            type(study.sampler).__name__,
            self.plan.describe(),
        )
        if counts.finished >= self.n_trials:
            log.info(
                "Nothing to run: the study has its n_trials=%d finished trials "
                "(raise hydra.sweeper.n_trials to continue it)",
                self.n_trials,
            )
        Path(str(self.sweep_dir)).mkdir(parents=True, exist_ok=True)
        stopped: SweepFailedError | None = None
        runner = _PoolRunner(self) if self._use_pool() else _Runner(self)
        try:
            with _Heartbeat() as heartbeat:
                while True:
                    while runner.running < self.n_jobs:
                        counts = count_trials(study.get_trials(deepcopy=False))
                        to_go = self.n_trials - counts.finished - counts.running
                        if to_go <= 0 or stopped is not None:
                            break
                        trial = study.ask()
                        self._start(trial, heartbeat)
                        overrides = self._trial_overrides(trial, distributions, fixed_params)
                        runner.submit(trial, overrides)
                    if runner.running == 0:
                        break
                    for outcome in runner.wait():
                        heartbeat.remove(outcome.trial)
                        self._tell(study, outcome)
                    if stopped is None:
                        stopped = self._check_failure_rate(study)
        finally:
            runner.close()
        counts = self._summarise(study, storage)
        if stopped is None and counts.failed and not counts.complete:
            stopped = SweepFailedError(
                f"no trial of study {study.study_name!r} completed; {counts.failed} failed: "
                + "; ".join(f"trial {n}: {r}" for n, _, r in _failures(study)[-3:])
            )
        if stopped is not None:
            raise stopped

    # -- pieces ------------------------------------------------------------------------

    def _storage(self) -> Any:
        self.storage = absolute_storage(self.storage)
        if self.storage is None:
            log.warning(
                "no storage: the study lives in memory and cannot be continued; set "
                "hydra.sweeper.storage (the sweeps/ configs use SQLite under outputs/)"
            )
        return self.storage

    def _use_pool(self) -> bool:
        return self.plan.n_jobs > 1 and "JoblibLauncher" in type(self.launcher).__name__

    def _reseed(self, study: optuna.Study) -> None:
        """A resumed study: seed + number of trials, so the sampler does not repeat itself."""
        existing = len(study.get_trials(deepcopy=False))
        seed = OmegaConf.select(self.sampler_config, "seed") if self.sampler_config else None
        if existing and seed is not None:
            study.sampler = instantiate(self.sampler_config, seed=int(seed) + existing)
            log.info("Resuming: sampler seed %d + %d existing trials", seed, existing)

    def _warn_on_changed_settings(self, study: optuna.Study, fixed: dict[str, Any]) -> None:
        earlier = [t for t in study.get_trials(deepcopy=False) if "fixed_overrides" in t.user_attrs]
        if not earlier:
            return
        before = earlier[-1].user_attrs["fixed_overrides"]
        now = {k: str(v) for k, v in fixed.items()}
        changed = {
            k: (before.get(k), now.get(k))
            for k in set(before) | set(now)
            if before.get(k) != now.get(k) and not k.startswith(("paths.", "hydra."))
        }
        if changed:
            log.warning(
                "Study %s continues with other fixed settings than its earlier trials: %s. "
                "Use another sweep.name for a separate study.",
                study.study_name,
                ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in sorted(changed.items())),
            )

    def _start(self, trial: optuna.Trial, heartbeat: _Heartbeat) -> None:
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_HEARTBEAT, time.time())
        run_dir = Path(str(self.sweep_dir)) / trial_dir_name(trial.number)
        trial.set_user_attr(ATTR_RUN_DIR, str(run_dir))
        heartbeat.add(trial)

    def _trial_overrides(
        self,
        trial: optuna.Trial,
        distributions: dict[str, Any],
        fixed: dict[str, Any],
    ) -> list[str]:
        (overrides,) = self._configure_trials([trial], distributions, {})
        if fixed:
            trial.set_user_attr("fixed_overrides", {k: str(v) for k, v in fixed.items()})
        fixed_overrides = [f"{name}={value}" for name, value in fixed.items()]
        return [
            *overrides,
            *fixed_overrides,
            f"sweep.trial={trial.number}",
            f"hydra.sweep.subdir={trial_dir_name(trial.number)}",
        ]

    def _tell(self, study: optuna.Study, outcome: _Outcome) -> None:
        trial = outcome.trial
        value, reason = self._value(trial, outcome)
        if reason is None:
            _tell(study, trial, value, TrialState.COMPLETE)
            log.info("Trial %d: %s = %s", trial.number, "objective", value)
            return
        trial.set_user_attr(ATTR_FAILURE, reason)
        _tell(study, trial, None, TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, reason)

    def _value(self, trial: optuna.Trial, outcome: _Outcome) -> tuple[float | None, str | None]:
        ret = outcome.ret
        if ret is not None and ret.status == JobStatus.COMPLETED:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                return None, f"the run returned {ret.return_value!r}, not an objective value"
            if not math.isfinite(value):
                return None, f"the objective is {value}"
            return value, None
        if ret is not None:
            return None, failure_reason(ret._return_value)
        # the launch failed (a worker process died): whatever the trial left behind
        results = read_results(trial.user_attrs[ATTR_RUN_DIR]) or {}
        objective = (results.get("objective") or {}).get("value")
        if results.get("status") == "completed" and objective is not None:
            return float(objective), None
        reason = results.get("failure") or failure_reason(outcome.error or RuntimeError("?"))
        return None, f"trial process died: {reason}"

    def _check_failure_rate(self, study: optuna.Study) -> SweepFailedError | None:
        counts = count_trials(study.get_trials(deepcopy=False))
        if counts.failed == 0:
            return None
        finished = counts.finished
        rate = counts.failed / max(1, finished)
        strict = self.max_failure_rate == 0.0
        judged = finished >= min(MIN_TRIALS_FOR_RATE, self.n_trials)
        if strict or (judged and rate > self.max_failure_rate):
            return SweepFailedError(
                f"sweep stopped: {counts.failed} of {finished} finished trials failed "
                f"(max_failure_rate={self.max_failure_rate}); "
                + "; ".join(f"trial {n}: {r}" for n, _, r in _failures(study)[-5:])
            )
        return None

    def _summarise(self, study: optuna.Study, storage: Any) -> StudyCounts:
        trials = study.get_trials(deepcopy=False)
        counts = count_trials(trials)
        failures = _failures(study)
        summary: dict[str, Any] = {"name": "optuna"}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            summary.update(
                best_params=best.params,
                best_value=best.value,
                best_trial=best.number,
                best_run_dir=best.user_attrs.get(ATTR_RUN_DIR),
            )
            log.info("Best value: %s (trial %d)", best.value, best.number)
            log.info("Best parameters: %s", best.params)
        summary.update(
            study_name=study.study_name,
            storage=masked(storage),
            direction=study.direction.name.lower(),
            n_trials=self.n_trials,
            trials={
                "complete": counts.complete,
                "failed": counts.failed,
                "interrupted": counts.interrupted,
                "pruned": counts.pruned,
                "running": counts.running,
            },
            failures=[{"trial": n, "params": p, "reason": r} for n, p, r in failures],
        )
        if failures:
            log.warning("%d failed or interrupted trial(s):", len(failures))
            for number, params, reason in failures:
                log.warning("  trial %d %s: %s", number, params, reason)
        OmegaConf.save(
            OmegaConf.create(summary), Path(str(self.sweep_dir)) / "optimization_results.yaml"
        )
        return counts


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, state: Any) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as exc:
        # GridSampler calls study.stop() once the grid is done; the trial is stored anyway
        if "Study.stop" not in str(exc):
            raise


def _failures(study: optuna.Study) -> list[tuple[int, dict[str, Any], str]]:
    return [
        (t.number, dict(t.params), str(t.user_attrs.get(ATTR_FAILURE, "unknown")))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    ]
