"""Every private API of Hydra, its plugins and Optuna that autotimm's sweeps use, in one place.

autotimm's sweepers reuse internals their packages do not promise to keep:
hydra-optuna-sweeper's search-space parsing and trial suggestion (`_impl`), the joblib
launcher's job function (`_core.execute_job`), Hydra's basic sweeper and launcher and its
file config source (`hydra._internal`), a failed job's exception (`JobReturn._return_value`),
and a study's storage object (Optuna has no public accessor for it).
One job or task per trial reuses the optional launcher plugins' job functions (the
submitit launcher's callable, the Ray launcher's `launch_job_on_ray`): `PLUGIN_SIGNATURES`.

pyproject.toml pins the versions this module was written against; `SIGNATURES` and
`check_internals()`, run by tests/test_plugin_api.py and every Optuna sweep, fail loudly.

Imports are lazy: the search-path plugin imports this module at Hydra's plugin discovery
(every start of train.py), where importing optuna would cost a second.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from autotimm.private_apis import locate as _locate
from autotimm.private_apis import signature_problems as _signature_problems
from autotimm.sweep.engine_checks import SweepSetupError  # light: no optuna

_OPTUNA_IMPL = "hydra_plugins.hydra_optuna_sweeper._impl"
_JOBLIB_CORE = "hydra_plugins.hydra_joblib_launcher._core"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper"
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher"
_FILE_SOURCE = "hydra._internal.core_plugins.file_config_source"

# "module:qualname" -> the parameter names autotimm's calls rely on, in order
SIGNATURES: dict[str, tuple[str, ...]] = {
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl.__init__": (
        "self",
        "sampler",
        "direction",
        "storage",
        "study_name",
        "n_trials",
        "n_jobs",
        "max_failure_rate",
        "custom_search_space",
        "params",
    ),
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl._process_searchspace_config": ("self",),
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl._parse_sweeper_params_config": ("self",),
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl._get_directions": ("self",),
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl._to_grid_sampler_choices": ("distribution",),
    f"{_OPTUNA_IMPL}:OptunaSweeperImpl._configure_trials": (
        "self",
        "trials",
        "search_space_distributions",
        "fixed_params",
        "fixed_overrides",
    ),
    f"{_OPTUNA_IMPL}:create_params_from_overrides": ("arguments",),
    f"{_JOBLIB_CORE}:execute_job": (
        "idx",
        "overrides",
        "hydra_context",
        "config",
        "task_function",
        "task_function_unwrap_depth",
        "singleton_state",
        "wrap_result",
    ),
    f"{_BASIC_SWEEPER}:BasicSweeper.__init__": ("self", "max_batch_size", "params"),
    f"{_BASIC_SWEEPER}:BasicSweeper.setup": ("self", "hydra_context", "task_function", "config"),
    f"{_BASIC_SWEEPER}:BasicSweeper.sweep": ("self", "arguments"),
    f"{_BASIC_LAUNCHER}:BasicLauncher.__init__": ("self",),
    f"{_FILE_SOURCE}:FileConfigSource.__init__": ("self", "provider", "path"),
    f"{_FILE_SOURCE}:FileConfigSource.load_config": ("self", "config_path"),
    f"{_FILE_SOURCE}:FileConfigSource.is_group": ("self", "config_path"),
    f"{_FILE_SOURCE}:FileConfigSource.is_config": ("self", "config_path"),
    f"{_FILE_SOURCE}:FileConfigSource.list": ("self", "config_path", "results_filter"),
    "optuna.storages:BaseStorage.set_trial_user_attr": ("self", "trial_id", "key", "value"),
    "optuna.storages:BaseStorage.set_trial_state_values": ("self", "trial_id", "state", "values"),
}


_SUBMITIT = "hydra_plugins.hydra_submitit_launcher"
_SUBMITIT_LAUNCHER = f"{_SUBMITIT}.submitit_launcher:BaseSubmititLauncher"
_RAY = "hydra_plugins.hydra_ray_launcher"
_RAY_UTIL = f"{_RAY}._launcher_util"
_SUBMITIT_JOB = ("sweep_overrides", "job_dir_key", "job_num", "job_id", "singleton_state")
_RAY_JOB = ("hydra_context", "ray_remote", "sweep_config", "task_function", "singleton_state")
# the optional launcher plugins (autotimm[slurm], autotimm[ray]), checked where installed
PLUGIN_SIGNATURES: dict[str, dict[str, tuple[str, ...]]] = {
    _SUBMITIT: {
        f"{_SUBMITIT_LAUNCHER}.__call__": ("self", *_SUBMITIT_JOB),
        f"{_SUBMITIT_LAUNCHER}.checkpoint": ("self", "args", "kwargs"),
        # the job script of `sbatch --test-only` (autotimm.sweep.engine_checks)
        "submitit.slurm.slurm:SlurmExecutor._make_submission_file_text": (
            "self",
            "command",
            "uid",
        ),
    },
    _RAY: {f"{_RAY_UTIL}:start_ray": ("init_cfg",), f"{_RAY_UTIL}:launch_job_on_ray": _RAY_JOB},
}


def signature_problems(signatures: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Where an installed package no longer has a function with the parameters relied on."""
    return _signature_problems(SIGNATURES if signatures is None else signatures)


def attribute_problems() -> list[str]:
    """Where an object no longer has an attribute autotimm reads or writes directly."""
    import optuna
    from hydra.core.utils import JobReturn

    problems = []
    if "_return_value" not in {f.name for f in dataclasses.fields(JobReturn)}:
        problems.append("hydra.core.utils.JobReturn: no _return_value field")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" in the log
    try:
        study = optuna.create_study()
    finally:
        optuna.logging.set_verbosity(verbosity)
    checks = {
        "optuna.Study._storage": hasattr(study, "_storage"),
    }
    impl = _locate(f"{_OPTUNA_IMPL}:OptunaSweeperImpl")(
        None, "minimize", None, None, 1, 1, 0.0, None, None
    )
    for name in ("custom_search_space_extender", "params"):
        checks[f"OptunaSweeperImpl.{name}"] = hasattr(impl, name)
    checks["BasicSweeper.launcher"] = hasattr(basic_sweeper_class()(None), "launcher")
    launcher = _locate("hydra_plugins.hydra_joblib_launcher.joblib_launcher:JoblibLauncher")()
    for name in ("hydra_context", "config", "task_function"):
        checks[f"JoblibLauncher.{name}"] = hasattr(launcher, name)
    problems += [f"{name}: missing" for name, ok in checks.items() if not ok]
    return problems


def check_internals() -> None:
    """Raise with every changed private API (run at the start of a sweep and in the tests)."""
    problems = signature_problems() + attribute_problems()
    if problems:
        raise RuntimeError(
            "autotimm's sweeps rely on private APIs of Hydra, its plugins and Optuna that the "
            "installed versions changed; install the versions pinned in autotimm's "
            "pyproject.toml:\n  " + "\n  ".join(problems)
        )


# -- Hydra ----------------------------------------------------------------------------------


def basic_sweeper_class() -> type:
    """Hydra's basic (grid) sweeper, which AutotimmBasicSweeper extends."""
    return _locate(f"{_BASIC_SWEEPER}:BasicSweeper")


# Hydra's basic launcher as `module:Name` (autotimm.sweep.launchers recognises launchers by it)
BASIC_LAUNCHER = f"{_BASIC_LAUNCHER}:BasicLauncher"


def file_config_source_class() -> type:
    """Hydra's `file://` config source, which the `sweeps/` folder's source extends."""
    return _locate(f"{_FILE_SOURCE}:FileConfigSource")


def job_error(ret: Any) -> BaseException | None:
    """The exception a failed job raised (None for a completed job).

    The public `JobReturn.return_value` re-raises it and writes to stderr on the way.
    """
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        return None
    error = ret._return_value
    return error if isinstance(error, BaseException) else RuntimeError(f"job failed: {error!r}")


def let_job_pass(ret: Any) -> None:
    """Mark a failed job completed with no value (its failure was recorded elsewhere)."""
    from hydra.core.utils import JobStatus

    ret.status = JobStatus.COMPLETED
    ret.return_value = None  # the public setter


class JoblibJobs:
    """Runs trials the way hydra-joblib-launcher's workers do (`_core.execute_job`)."""

    def __init__(self, launcher: Any) -> None:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        setup_globals()
        config = launcher.config
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        self._launcher = launcher
        self._singleton_state = Singleton.get_state()

    def call(self, idx: int, overrides: Sequence[str]) -> tuple[Callable[..., Any], tuple]:
        """The function and its arguments that run job `idx` (picklable, for a worker)."""
        execute_job = _locate(f"{_JOBLIB_CORE}:execute_job")
        launcher = self._launcher
        return execute_job, (
            idx,
            list(overrides),
            launcher.hydra_context,
            launcher.config,
            launcher.task_function,
            0,  # task_function_unwrap_depth: loky pickles the function itself
            self._singleton_state,
            False,  # wrap_result: autotimm's task returns plain values
        )


# -- hydra-optuna-sweeper ---------------------------------------------------------------------


class OptunaSearch:
    """hydra-optuna-sweeper's search space: parsing, directions, grid choices, suggestions.

    `settings` are the sweeper's config keys (sampler, direction, storage, study_name,
    n_trials, max_failure_rate, custom_search_space, params).
    """

    def __init__(self, settings: dict[str, Any], config: Any) -> None:
        impl_class = _locate(f"{_OPTUNA_IMPL}:OptunaSweeperImpl")
        # n_jobs sizes the plugin's own sweep loop, which autotimm does not run
        self._impl = impl_class(n_jobs=1, **settings)
        self._impl.config = config  # a custom_search_space function receives it
        self._deletions: list[str] = []  # `~key` overrides, passed to every trial

    def space(self, arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(distributions, fixed values) from `hydra.sweeper.params` and the command line."""
        impl = self._impl
        create_params_from_overrides = _locate(f"{_OPTUNA_IMPL}:create_params_from_overrides")
        impl._process_searchspace_config()
        distributions, fixed, self._deletions = create_params_from_overrides(
            [*impl._parse_sweeper_params_config(), *arguments]
        )
        for name in fixed:
            distributions.pop(name, None)
        return distributions, fixed

    def directions(self) -> list[str]:
        return list(self._impl._get_directions())

    def grid(self, distributions: dict[str, Any]) -> dict[str, list[Any]]:
        """GridSampler's search space: the choices of each (discrete) distribution."""
        return {
            name: list(self._impl._to_grid_sampler_choices(d)) for name, d in distributions.items()
        }

    def suggest(self, trial: Any, distributions: dict[str, Any]) -> list[str]:
        """Sample the trial's values; its overrides (`name=value`)."""
        (overrides,) = self._impl._configure_trials([trial], distributions, {}, self._deletions)
        return list(overrides)


# -- Optuna -------------------------------------------------------------------------------------


def fail_trial(study: Any, trial: Any, attrs: dict[str, Any]) -> bool:
    """Set user attributes on another process's RUNNING trial and mark it FAIL.

    False when the trial finished meanwhile or another process failed it first. A trial
    read back from the storage (FrozenTrial) has no public setter for user attributes, and
    the public `Study.tell` would run the sampler's after-trial hook for a trial this
    process never sampled. The study's storage object has no public accessor (a second one
    from the URL would open a second connection pool).
    """
    from optuna.trial import TrialState

    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except RuntimeError:  # finished meanwhile
        return False


# -- launcher plugins: one job (submitit) or task (Ray) per trial -----------------------------


def installed_plugin_signatures() -> dict[str, tuple[str, ...]]:
    """The PLUGIN_SIGNATURES of the launcher plugins installed here."""
    from importlib.util import find_spec

    found = [s for package, s in PLUGIN_SIGNATURES.items() if find_spec(package) is not None]
    return {target: params for signatures in found for target, params in signatures.items()}


def _check_plugin(package: str) -> None:
    """Raise, before any trial starts, when the engine's plugin changed a call relied on."""
    problems = signature_problems(PLUGIN_SIGNATURES[package])
    if problems:
        raise RuntimeError(
            f"autotimm runs trials through private APIs of {package} that the installed "
            "version changed; install the version of autotimm's extra:\n  " + "\n  ".join(problems)
        )


class SubmititJobs:
    """One submitit job per trial, as hydra-submitit-launcher's `launch` submits its jobs.

    The executor comes from the launcher's own config keys (resources, time limit,
    `max_num_timeout`) as in `launch`; each job runs the launcher itself (`__call__`: the
    trial's config, `run_job` in the trial's directory), whose `checkpoint` resubmits the
    same call on timeout or preemption, so a requeued trial starts again in its directory.
    """

    def __init__(self, launcher: Any) -> None:
        _check_plugin(_SUBMITIT)
        self._launcher = launcher
        self.cluster = str(launcher._EXECUTOR)  # "slurm" or "local"

    def executor(self) -> Any:
        """The executor `launch` builds from the launcher's params (and the sweep dir's mode)."""
        import submitit
        from omegaconf import OmegaConf

        params, init_keys = dict(self._launcher.params), {"max_num_timeout"}
        init = {f"{self.cluster}_{k}": v for k, v in params.items() if k in init_keys}
        executor = submitit.AutoExecutor(params["submitit_folder"], cluster=self.cluster, **init)
        shared = set(OmegaConf.structured(_locate(f"{_SUBMITIT}.config:BaseQueueConf")).keys())
        resources = {k: v for k, v in params.items() if k not in init_keys | {"submitit_folder"}}
        executor.update_parameters(
            **{(k if k in shared else f"{self.cluster}_{k}"): v for k, v in resources.items()}
        )
        sweep = self._launcher.config.hydra.sweep
        if sweep.get("mode") is not None:  # the sweeper made the folder
            os.chmod(str(sweep.dir), mode=int(str(sweep.mode), 8))
        return executor

    @staticmethod
    def slurm_job_script(executor: Any, command: str = "true") -> str:
        """The sbatch script submitit would submit for `command` with this executor's
        parameters (its SlurmExecutor's private `_make_submission_file_text`)."""
        return executor._executor._make_submission_file_text(command, "check")

    def call(self, idx: int, overrides: Sequence[str]) -> tuple[Callable[..., Any], tuple]:
        """The callable and arguments of job `idx` (what `launch` maps over its job array)."""
        from hydra.core.singleton import Singleton

        args = (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
        return self._launcher, args


class RayJobs:
    """One Ray task per trial, as hydra-ray-launcher's `launch` starts its tasks."""

    def __init__(self, launcher: Any) -> None:
        try:
            import ray  # noqa: F401  (the plugin needs it; say so before anything starts)

            self._util = importlib.import_module(_RAY_UTIL)
        except ImportError as exc:
            raise SweepSetupError(
                f"hydra/launcher=ray_gpu ({type(launcher).__name__}) runs trials as Ray tasks, but "
                f"Ray or hydra-ray-launcher is not installed ({exc}): pip install 'autotimm[ray]'"
            ) from None
        _check_plugin(_RAY)
        self._launcher = launcher

    def start(self) -> None:
        """Start Ray here, or join the cluster at `ray.init.address`, as `launch` does."""
        from hydra.core.utils import setup_globals
        from omegaconf import OmegaConf

        setup_globals()
        init = OmegaConf.to_container(self._launcher.ray_cfg.init, resolve=True)  # as `launch`
        # Ray's minimum, not its default 30% of RAM: trials return a number
        init.setdefault("object_store_memory", 78643200)
        self._util.start_ray(OmegaConf.create(init))

    def submit(self, idx: int, overrides: Sequence[str]) -> Any:
        """Start trial `idx` as a Ray task with the launcher's `ray.remote` resources."""
        from hydra.core.singleton import Singleton
        from omegaconf import open_dict

        launcher = self._launcher
        config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        with open_dict(config):
            config.hydra.job.id = f"job_id_for_{idx}"  # as the launcher: set remotely, if at all
            config.hydra.job.num = idx
        return self._util.launch_job_on_ray(
            launcher.hydra_context,
            launcher.ray_cfg.remote,
            config,
            launcher.task_function,
            Singleton.get_state(),
        )
