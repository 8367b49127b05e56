"""The Optuna study behind `python train.py -m +sweeps=<name>`: never lost, failure-tolerant.

`StudySweeper` takes hydra-optuna-sweeper's configuration (search space syntax, samplers,
`optimization_results.yaml`) and reuses its search-space parsing (through
autotimm.sweep.plugin_api), with autotimm's study handling:

- storage: the study lives in a journal file in the sweep directory by default (safe on a
  shared filesystem, no database server), or where `hydra.sweeper.storage` says
  (`journal:PATH`, SQLite, PostgreSQL); relative paths are made absolute
  (autotimm.sweep.storage).
- continue up to `n_trials`: re-running the same command counts the study's finished
  trials and runs only the missing ones (hydra-optuna-sweeper would add n_trials more).
  Several sweep processes on one study (PostgreSQL) end with exactly n_trials: each asks
  for a trial first, then counts the trials asked before it (`_ask`).
- one study, one set of fixed settings: a rerun with another backbone, dataset, ... is
  refused with the way to continue or start anew (autotimm.sweep.identity).
- before the study is touched, the storage is reached and the engine asked whether it
  will take the trials (autotimm.sweep.engine_checks): a bad URL, password, partition or
  resource request, or a missing Ray, stops the sweep with one short message.
  Each trial draws its values with a seed of its own (seed, study, trial number), so a
  continued study never repeats values and two sweep processes on one study never draw
  the same ones; TPE uses constant liar with parallel trials (autotimm.sweep.sampling).
- pruning: trials report to their own trial through the storage (autotimm.sweep.pruning) and
  the sweeper tells PRUNED when a trial's record says so; pruned trials count toward
  n_trials, not toward max_failure_rate.
- warm starts: `sweep.enqueue` and `sweep.warm_start_from` run first.
- resume after a kill: autotimm.sweep.recovery fails the trials a dead sweep left
  RUNNING as "interrupted" and queues their values again; finished trials are kept.
- failures: a trial that raises (bad values, NaN loss, out of memory, a dead worker) is
  told to Optuna as FAIL with its reason in the trial's user attributes; the sweep goes on
  until more than `max_failure_rate` of its finished trials failed (autotimm.sweep.trials).
  The summary (log and `optimization_results.yaml`) lists every failure.
- every GPU busy: one trial per GPU, as autotimm.sweep.devices plans; with the joblib launcher
  and several trials at once, a new trial starts as soon as any trial ends
  (autotimm.sweep.runners).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from autotimm.records.objectives import objective_specs
from autotimm.sweep import plugin_api
from autotimm.sweep.dashboard import start_beside_sweep, trial_attributes
from autotimm.sweep.devices import DevicePlan, plan_for_sweep
from autotimm.sweep.engine_checks import check_storage
from autotimm.sweep.identity import check_identity
from autotimm.sweep.launchers import make_runner
from autotimm.sweep.recovery import Heartbeat, give_back, recover_interrupted
from autotimm.sweep.runners import Outcome, Runner
from autotimm.sweep.sampling import NSGA2, TPE, build_sampler, sampler_for_trial, warm_start
from autotimm.sweep.storage import absolute_storage, masked, open_storage, sweep_storage
from autotimm.sweep.summary import write_summary
from autotimm.sweep.trials import (
    ATTR_FAILURE,
    ATTR_FIXED,
    ATTR_RUN_DIR,
    SweepFailedError,
    count_trials,
    failure_rate_exceeded,
    failures,
    listed,
    trial_dir_name,
    trial_value,
    was_pruned,
    within_n_trials,
)
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)


class StudySweeper:
    """hydra-optuna-sweeper's settings with autotimm's study handling (see the module doc)."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
        pruner: Any = None,
    ) -> None:
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise UserError(
                f"hydra.sweeper.max_failure_rate={max_failure_rate} not accepted: the fraction "
                "of finished trials that may fail, from 0.0 (stop at the first) to 1.0 (never stop)"
            )
        self.settings = dict(
            sampler=sampler,
            direction=direction,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            max_failure_rate=max_failure_rate,
            custom_search_space=custom_search_space,
            params=params,
        )
        # Hydra 1.4 builds a sweeper with _recursive_=False: the sampler and pruner come as
        # their config nodes
        self.sampler = _built(sampler)
        pruner = _built(pruner)
        # trials report to their own trial through the storage (autotimm.sweep.pruning); the
        # sweeper's study needs the same pruner only for Optuna's own bookkeeping
        self.pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.max_failure_rate = float(max_failure_rate)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        if self.study_name is None and not isinstance(self.pruner, optuna.pruners.NopPruner):
            raise UserError(  # Optuna would invent a name the trials cannot know
                "hydra.sweeper.study_name=null with a pruner: each trial finds its Optuna trial "
                "by the study's name; set one (hydra.sweeper.study_name=NAME, or sweep.name=NAME "
                "with +sweeps=...), or hydra/sweeper/pruner=none"
            )
        plugin_api.check_internals()
        self.plan: DevicePlan = plan_for_sweep(config)  # before the launcher reads n_jobs
        self.sampler_config = OmegaConf.select(config, "hydra.sweeper.sampler")
        self.sweep_settings = config.get("sweep") or {}  # enqueue, warm_start_from
        specs = objective_specs(config.get("optimized_metric"), config.get("optimized_mode"))
        self.objective_names = [spec.name for spec in specs]
        if len(specs) > 1:
            self._multi_objective()
        self.search = plugin_api.OptunaSearch(self.settings, config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def _multi_objective(self) -> None:
        """Several objectives: NSGA-II instead of TPE (which optimises one), no pruning
        (Optuna prunes single-objective studies only)."""
        if self.sampler_config is not None and self.sampler_config.get("_target_") == TPE:
            seed = self.sampler_config.get("seed")
            self.sampler_config = OmegaConf.create({"_target_": NSGA2, "seed": seed})
            self.sampler = build_sampler(self.sampler_config, self.plan.n_jobs)
            log.info("Several objectives %s: sampling with NSGA-II", self.objective_names)
        if not isinstance(self.pruner, optuna.pruners.NopPruner):
            log.warning(
                "Pruning needs one objective: hydra/sweeper/pruner=%s is not used with "
                "optimized_metric=%s",
                type(self.pruner).__name__,
                self.objective_names,
            )
            self.pruner = optuna.pruners.NopPruner()

    # -- the sweep ---------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        distributions, fixed = self.search.space(arguments)
        is_grid = (
            isinstance(self.sampler, functools.partial)
            and self.sampler.func == optuna.samplers.GridSampler
        )
        if is_grid:
            grid = self.search.grid(distributions)
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        elif self.sampler_config is not None:  # constant liar decided by the device plan
            self.sampler = build_sampler(self.sampler_config, self.plan.n_jobs)
        self.is_grid = is_grid
        # before the study is touched: can the storage and the engine be reached
        self.storage = absolute_storage(sweep_storage(self.storage, self.sweep_dir))
        check_storage(self.storage)
        runner = make_runner(self.plan, self.launcher)
        try:
            study = self._open_study(fixed=fixed)
            start_beside_sweep(self.storage, self.sweep_settings, study.study_name)
            warm_start(study, self.sweep_settings, self.storage, distributions)
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            stopped = self._run_trials(study, runner, distributions, fixed)
        finally:
            runner.close()
        counts = write_summary(
            study, self.storage, self.n_trials, self.objective_names, self.sweep_dir
        )
        from autotimm.inference.model_card import copy_best_card

        copy_best_card(self.sweep_dir)  # the best trial's MODEL_CARD.md (never raises)
        if stopped is None and counts.failed and not counts.complete:
            stopped = SweepFailedError(
                f"no trial of study {study.study_name!r} completed; {counts.failed} failed: "
                + listed(failures(study)[-3:])
            )
        if stopped is not None:
            raise stopped

    def _open_study(self, fixed: dict[str, Any]) -> optuna.Study:
        """Create or load the study; recover its interrupted trials; log where it stands."""
        directions = self.search.directions()
        if len(directions) != len(self.objective_names):
            raise UserError(
                f"hydra.sweeper.direction={directions} does not match optimized_metric="
                f"{self.objective_names}; leave the direction to follow optimized_mode"
            )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(self.storage),
            sampler=self.sampler,
            pruner=self.pruner,
            directions=directions,
            load_if_exists=True,
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != [d.lower() for d in directions]:
            raise UserError(
                f"study {study.study_name!r} in {masked(self.storage)} optimises {stored}, "
                f"this sweep asks for {directions}; use another sweep.name for a new study"
            )
        check_identity(study, self.storage, fixed)  # one study, one set of fixed settings
        with warnings.catch_warnings():  # experimental in Optuna 5; the dashboard's axis titles
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(self.objective_names)
        recover_interrupted(study)
        self._log_start(study)
        return study

    def _log_start(self, study: optuna.Study) -> None:
        counts = count_trials(study.get_trials(deepcopy=False))
        log.info(
            "Study %s (%s): %d of n_trials=%d finished (%d complete, %d pruned, %d failed), "
            "%d running elsewhere; sampler %s, pruner %s; %s",
            study.study_name,
            masked(self.storage),
            counts.finished,
            self.n_trials,
            counts.complete,
            counts.pruned,
            counts.failed,
            counts.running,
            type(study.sampler).__name__,
            type(self.pruner).__name__,
            self.plan.describe(),
        )
        if counts.finished >= self.n_trials:
            log.info(
                "Nothing to run: the study has its n_trials=%d finished trials "
                "(raise hydra.sweeper.n_trials to continue it)",
                self.n_trials,
            )

    def _to_go(self, study: optuna.Study) -> int:
        """Trials still to start: n_trials less the finished ones and those running anywhere."""
        counts = count_trials(study.get_trials(deepcopy=False))
        return self.n_trials - counts.finished - counts.running

    def _ask(self, study: optuna.Study) -> optuna.Trial | None:
        """A new trial within n_trials, or None when the study has all it needs.

        Ask first, then count (autotimm.sweep.trials.within_n_trials): of two sweep
        processes asking at the same moment for the last place, one gets it; the other's
        trial is failed as surplus at once (it never ran, it does not count).
        """
        recover_interrupted(study)  # another sweep process on the study died meanwhile
        if self._to_go(study) <= 0:
            return None
        trial = study.ask()
        if within_n_trials(study, trial.number, self.n_trials):
            return trial
        give_back(study, trial)
        return None

    def _run_trials(
        self,
        study: optuna.Study,
        runner: Runner,
        distributions: dict[str, Any],
        fixed: dict[str, Any],
    ) -> SweepFailedError | None:
        """Keep `plan.n_jobs` trials running until n_trials finished or too many failed."""
        stopped: SweepFailedError | None = None
        with Heartbeat() as heartbeat:
            while True:
                while runner.running < self.plan.n_jobs and stopped is None:
                    trial = self._ask(study)
                    if trial is None:
                        break
                    self._seed_for(study, trial)
                    heartbeat.start(trial, self.sweep_dir / trial_dir_name(trial.number))
                    runner.submit(trial, self._trial_overrides(trial, distributions, fixed))
                if runner.running == 0:
                    break
                for outcome in runner.wait():
                    heartbeat.remove(outcome.trial)
                    self._tell(study, outcome)
                if stopped is None:
                    stopped = failure_rate_exceeded(study, self.max_failure_rate, self.n_trials)
        return stopped

    # -- pieces ------------------------------------------------------------------------

    def _seed_for(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Draw this trial's values with a seed of its own (autotimm.sweep.sampling)."""
        if self.is_grid:
            return
        sampler = sampler_for_trial(
            self.sampler_config, self.plan.n_jobs, study.study_name, trial.number
        )
        if sampler is not None:
            study.sampler = sampler

    def _trial_overrides(
        self, trial: optuna.Trial, distributions: dict[str, Any], fixed: dict[str, Any]
    ) -> list[str]:
        overrides = self.search.suggest(trial, distributions)
        if fixed:
            trial.set_user_attr(ATTR_FIXED, {k: str(v) for k, v in fixed.items()})
        return [
            *overrides,
            *(f"{name}={value}" for name, value in fixed.items()),
            f"sweep.trial={trial.number}",
            f"hydra.sweep.subdir={trial_dir_name(trial.number)}",
        ]

    def _tell(self, study: optuna.Study, outcome: Outcome) -> None:
        trial = outcome.trial
        run_dir = trial.user_attrs[ATTR_RUN_DIR]
        value, reason = trial_value(outcome.ret, outcome.error, run_dir)
        for key, shown in trial_attributes(run_dir, reason).items():  # for the dashboard
            trial.set_user_attr(key, shown)
        if reason is None and was_pruned(run_dir):
            # the trial reported its intermediate values itself; Optuna keeps the last one
            _tell(study, trial, None, TrialState.PRUNED)
            log.info("Trial %d: pruned (%s = %s when it stopped)", trial.number, "objective", value)
            return
        if reason is None:
            _tell(study, trial, value, TrialState.COMPLETE)
            log.info("Trial %d: %s = %s", trial.number, "objective", value)
            return
        trial.set_user_attr(ATTR_FAILURE, reason)
        _tell(study, trial, None, TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, reason)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None, state: Any) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as exc:
        # GridSampler calls study.stop() once the grid is done; the trial is stored anyway
        if "Study.stop" not in str(exc):
            raise


def _built(node: Any) -> Any:
    """A `_target_` node built (a grid sampler's `_partial_` node as its partial); other
    values as they are."""
    from hydra.utils import instantiate

    if isinstance(node, DictConfig) and "_target_" in node:
        return instantiate(node)
    return node
