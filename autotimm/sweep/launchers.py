"""The one place that knows launcher classes: what each launcher is, how it runs trials,
and which runner starts a sweep's trials through it.

Launchers are recognised by their class (`module:Name`, subclasses count as their base):
- Hydra's basic launcher runs trials one by one in the sweeper's process (IN_PROCESS);
- hydra-joblib-launcher runs them in loky worker processes on this machine (JOBLIB);
- hydra-submitit-launcher's LocalLauncher in local processes (LOCAL), its SlurmLauncher and
  hydra-ray-launcher on a cluster that gives each trial its GPU (REMOTE).
`make_runner` picks the runner (autotimm.sweep.runners, runners_submitit, runners_ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotimm.sweep import plugin_api

if TYPE_CHECKING:  # pragma: no cover
    from autotimm.sweep.devices import DevicePlan
    from autotimm.sweep.runners import Runner

# Hydra's basic launcher's private module path is plugin_api's to spell
BASIC_LAUNCHER = plugin_api.BASIC_LAUNCHER
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher:JoblibLauncher"
SUBMITIT_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher:BaseSubmititLauncher"
SUBMITIT_LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher:LocalLauncher"
RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher:RayLauncher"

# how a launcher runs its trials (launcher_kind)
IN_PROCESS = "in-process"  # Hydra's basic launcher: one by one in the sweeper's process
JOBLIB = "joblib"  # loky worker processes on this machine
LOCAL = "local"  # other processes on this machine that inherit our environment (submitit-local)
REMOTE = "remote"  # SLURM, Ray, ...: the launcher gives each trial its GPU
_LOCAL_CLASSES = {JOBLIB: JOBLIB_LAUNCHER, LOCAL: SUBMITIT_LOCAL_LAUNCHER}


def _class_of(launcher: Any) -> type | None:
    if launcher is None or isinstance(launcher, type):
        return launcher
    if isinstance(launcher, str):
        from hydra.utils import get_class

        return get_class(launcher) if launcher else None
    return type(launcher)


def _derives_from(cls: type, target: str) -> bool:
    """Whether `cls` is, or derives from, the class `module:Name`.

    Compared along the class's MRO by module and name, not with issubclass: Hydra's plugin
    scan can import a launcher's module a second time, and the two class objects then
    differ although they are the same class.
    """
    module, _, name = target.partition(":")
    return any(c.__module__ == module and c.__qualname__ == name for c in cls.__mro__)


def is_launcher(launcher: Any, target: str) -> bool:
    """Whether `launcher` (an instance, class or `_target_`) is, or derives from, `module:Name`."""
    cls = _class_of(launcher)
    return cls is not None and _derives_from(cls, target)


def launcher_kind(launcher: Any) -> str:
    """How a launcher runs trials: IN_PROCESS, JOBLIB, LOCAL or REMOTE, by its class.

    `launcher`: a launcher, its class or its `_target_` (None: Hydra's default, basic).
    Subclasses count as their base; a launcher whose plugin is not installed is not in use.
    """
    cls = _class_of(launcher)
    if cls is None or _derives_from(cls, BASIC_LAUNCHER):
        return IN_PROCESS
    for kind, target in _LOCAL_CLASSES.items():
        if _derives_from(cls, target):
            return kind
    return REMOTE


def make_runner(plan: DevicePlan, launcher: Any) -> Runner:
    """The runner for the sweep's launcher (autotimm.sweep.runners' module doc)."""
    from autotimm.sweep.runners import LauncherRunner, PoolRunner

    if plan.own_pool:
        return PoolRunner(launcher, plan)
    if is_launcher(launcher, SUBMITIT_LAUNCHER):
        from autotimm.sweep.runners_submitit import SubmititRunner

        return SubmititRunner(launcher)
    if is_launcher(launcher, RAY_LAUNCHER):
        from autotimm.sweep.runners_ray import RayRunner

        return RayRunner(launcher)
    return LauncherRunner(launcher)
