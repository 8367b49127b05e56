"""autotimm.sweep.devices and .launchers: launchers recognised by type, threads per trial, one
key for trials at once."""

from __future__ import annotations

import logging
import os

import pytest
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

from autotimm.sweep import devices, launchers

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class MyJoblibLauncher(JoblibLauncher):
    """A user's launcher built on joblib's: runs trials like it."""


class JoblibLauncherLookalike:
    """Named like joblib's launcher, but not one: its trials may run anywhere."""


def test_launchers_are_recognised_by_type():
    assert launchers.launcher_kind(JOBLIB) == launchers.JOBLIB
    assert launchers.launcher_kind(JoblibLauncher()) == launchers.JOBLIB  # an instance
    assert launchers.launcher_kind(MyJoblibLauncher) == launchers.JOBLIB  # a subclass
    assert launchers.launcher_kind(JoblibLauncherLookalike) == launchers.REMOTE  # not by name
    assert launchers.launcher_kind(BASIC) == launchers.IN_PROCESS
    assert launchers.launcher_kind(None) == launchers.IN_PROCESS  # Hydra's default launcher
    assert launchers.launcher_kind(LocalLauncher) == launchers.LOCAL
    assert launchers.launcher_kind(SlurmLauncher) == launchers.REMOTE


def test_an_unknown_launcher_target_names_itself():
    with pytest.raises(ImportError, match="no_such.Launcher"):
        launchers.launcher_kind("no_such.Launcher")


def test_threads_per_trial_share_the_cores():
    cores = os.cpu_count() or 1
    one = devices.plan_devices(available=[])
    assert one.threads_per_trial == cores and one.thread_env()["OMP_NUM_THREADS"] == str(cores)
    two = devices.plan_devices(available=[], n_jobs=2)
    assert two.threads_per_trial == max(1, cores // 2)
    assert devices.plan_devices(available=[], n_jobs=4 * cores).threads_per_trial == 1


def sweep_config(tmp_path, target: str, launcher: dict | None = None, **sweep):
    base = {"gpus": None, "n_jobs": None, "cpu_workers": 1, "simulate_gpus": 0}
    return OmegaConf.create(
        {
            "sweep": {**base, **sweep},
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "launcher": {"_target_": target, **(launcher or {})},
            },
        }
    )


@pytest.fixture
def clean_env(monkeypatch):
    for key in (devices.ENV_POOL, devices.ENV_SIMULATED, devices.ENV_LOCK_DIR):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(devices.ENV_SIMULATE, raising=False)


def test_one_key_sets_trials_at_once(tmp_path, clean_env, caplog):
    """sweep.n_jobs decides; the joblib launcher's own n_jobs follows the plan."""
    config = sweep_config(tmp_path, JOBLIB, {"n_jobs": -1}, simulate_gpus=3, n_jobs=2)
    plan = devices.plan_for_sweep(config)
    assert plan.n_jobs == 2 and config.hydra.launcher.n_jobs == 2
    assert plan.own_pool and plan.launcher == launchers.JOBLIB
    with caplog.at_level(logging.WARNING, logger="autotimm.sweep.devices"):
        config = sweep_config(tmp_path, JOBLIB, {"n_jobs": 5}, simulate_gpus=3)
        assert devices.plan_for_sweep(config).n_jobs == 3
    assert config.hydra.launcher.n_jobs == 3
    assert "hydra.launcher.n_jobs=5 is replaced" in caplog.text and "sweep.n_jobs" in caplog.text


def test_own_pool_only_for_joblib_with_several_trials(tmp_path, clean_env):
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert not devices.plan_for_sweep(sweep_config(tmp_path, JOBLIB)).own_pool  # 1 on a CPU
    assert devices.plan_for_sweep(sweep_config(tmp_path, JOBLIB, cpu_workers=2)).own_pool
    plan = devices.plan_for_sweep(sweep_config(tmp_path, local, simulate_gpus=2))
    assert plan.launcher == launchers.LOCAL and plan.n_jobs == 2 and not plan.own_pool
    assert os.environ[devices.ENV_POOL] == "0,1"  # submitit-local jobs claim from the pool
    plan = devices.plan_for_sweep(sweep_config(tmp_path, BASIC, simulate_gpus=2, n_jobs=2))
    assert plan.launcher == launchers.IN_PROCESS and plan.n_jobs == 1 and not plan.own_pool


def test_claim_is_reexported_from_devices():
    from autotimm.sweep import gpu_claim

    assert devices.claim_gpu is gpu_claim.claim_gpu
    assert devices.ENV_SIMULATED_GPU == gpu_claim.ENV_SIMULATED_GPU
