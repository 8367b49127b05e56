"""autotimm.sweep.plugin_api: the one place that calls private APIs of Hydra, its plugins and
Optuna. These tests fail when an upgrade changes one of them (pyproject.toml pins them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from autotimm.sweep import plugin_api
from tests.conftest import ROOT, TRAIN, train_env


def test_every_private_signature_relied_on_is_there():
    assert plugin_api.signature_problems() == []
    assert plugin_api.attribute_problems() == []
    plugin_api.check_internals()  # what every Optuna sweep runs at its start


def test_a_changed_signature_fails_loudly(monkeypatch):
    changed = {
        "hydra_plugins.hydra_optuna_sweeper._impl:create_params_from_overrides": (
            "arguments",
            "strict",
        ),
        "hydra_plugins.hydra_optuna_sweeper._impl:OptunaSweeperImpl._gone": ("self",),
        "no_such_module:f": (),
    }
    problems = plugin_api.signature_problems(changed)
    assert len(problems) == 3
    assert "create_params_from_overrides: parameters ('arguments',)" in problems[0]
    assert "_gone: missing" in problems[1] and "no_such_module:f: missing" in problems[2]
    monkeypatch.setattr(plugin_api, "SIGNATURES", changed)
    with pytest.raises(RuntimeError, match=r"pinned in autotimm's pyproject.toml"):
        plugin_api.check_internals()


PRIVATE = re.compile(
    r"hydra\._internal|hydra_optuna_sweeper\._impl|_impl import|hydra_joblib_launcher\._core"
    r"|_core import|\._storage\b|\._trial_id\b|\._return_value\b|\._suggest\("
)


def test_private_apis_are_called_from_the_adapter_only():
    sources = [*(ROOT / "autotimm").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    adapter = ROOT / "autotimm" / "sweep" / "plugin_api.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        if path != adapter
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert offenders == []
    assert PRIVATE.search(adapter.read_text())  # the pattern does find them


def test_pins_match_the_installed_versions():
    from importlib.metadata import version

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(d.split("==") for d in deps if "==" in d)
    for name in ("hydra-core", "hydra-optuna-sweeper", "hydra-joblib-launcher"):
        assert pinned.get(name) == version(name), name
    # Optuna: one major version (only the study's storage object is read privately)
    from packaging.requirements import Requirement

    (optuna,) = [Requirement(d) for d in deps if d.startswith("optuna")]
    assert optuna.specifier.contains(version("optuna")) and "<6" in str(optuna.specifier)


def test_optuna_search_parses_suggests_and_grids():
    import optuna

    search = plugin_api.OptunaSearch(
        {
            "sampler": None,
            "direction": "maximize",
            "storage": None,
            "study_name": None,
            "n_trials": 2,
            "max_failure_rate": 0.0,
            "custom_search_space": None,
            "params": {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "seed": "1"},
        },
        config=None,
    )
    distributions, fixed = search.space(["backbone=resnet18,resnet34"])
    assert set(distributions) == {"optimizer.lr", "backbone"} and fixed == {"seed": "1"}
    assert search.directions() == ["maximize"]
    grid = search.grid({"backbone": distributions["backbone"]})
    assert grid == {"backbone": ["resnet18", "resnet34"]}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    overrides = search.suggest(trial, distributions)
    assert sorted(o.split("=")[0] for o in overrides) == ["backbone", "optimizer.lr"]
    assert 1e-4 <= trial.params["optimizer.lr"] <= 1e-2


def test_failed_job_error_and_letting_it_pass():
    from hydra.core.utils import JobReturn, JobStatus

    error = ValueError("lr=-1")
    failed = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert plugin_api.job_error(failed) is error
    plugin_api.let_job_pass(failed)
    assert failed.status == JobStatus.COMPLETED and failed.return_value is None
    assert plugin_api.job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)) is None
    odd = plugin_api.job_error(JobReturn(status=JobStatus.FAILED, _return_value="?"))
    assert isinstance(odd, RuntimeError) and "'?'" in str(odd)


def test_fail_trial_marks_a_running_trial_once():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.ask()
    (running,) = study.get_trials()
    assert plugin_api.fail_trial(study, running, {"failure": "gone"})
    (failed,) = study.get_trials()
    assert failed.state.name == "FAIL" and failed.user_attrs == {"failure": "gone"}
    assert not plugin_api.fail_trial(study, running, {"failure": "again"})  # already failed


def test_the_sweepers_n_jobs_key_is_gone(tmp_path: Path):
    """Trials at once is sweep.n_jobs alone: hydra.sweeper.n_jobs fails at composition."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "+sweeps=quick", "hydra.sweeper.n_jobs=4", "--cfg", "hydra"],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "n_jobs" in proc.stderr and "AutotimmOptunaSweeperConf" in proc.stderr


# -- the launcher plugins' job functions (one submitit job / Ray task per trial) -----------

ENGINE_PRIVATE = re.compile(r"\._EXECUTOR\b|_launcher_util|launch_job_on_ray|BaseQueueConf")


def test_launcher_plugin_signatures_are_checked_where_installed():
    from importlib.util import find_spec

    installed = plugin_api.installed_plugin_signatures()
    for package, signatures in plugin_api.PLUGIN_SIGNATURES.items():
        assert (set(signatures) <= set(installed)) == (find_spec(package) is not None), package
    assert any("BaseSubmititLauncher.__call__" in target for target in installed)  # [dev]
    assert plugin_api.signature_problems(installed) == []


def test_a_changed_launcher_plugin_fails_before_any_trial(monkeypatch):
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

    package = "hydra_plugins.hydra_submitit_launcher"
    (call,) = [t for t in plugin_api.PLUGIN_SIGNATURES[package] if t.endswith("__call__")]
    changed = {**plugin_api.PLUGIN_SIGNATURES, package: {call: ("self", "overrides")}}
    monkeypatch.setattr(plugin_api, "PLUGIN_SIGNATURES", changed)
    with pytest.raises(RuntimeError, match=r"hydra_submitit_launcher that the installed") as err:
        plugin_api.SubmititJobs(LocalLauncher())
    assert "__call__: parameters ('self', 'sweep_overrides'" in str(err.value)


def test_engine_internals_are_called_from_the_adapter_only(monkeypatch):
    """The check above, for the launcher plugins' internals (PLUGIN_SIGNATURES)."""
    monkeypatch.setitem(globals(), "PRIVATE", ENGINE_PRIVATE)
    test_private_apis_are_called_from_the_adapter_only()


def test_submitit_job_is_the_launchers_own_call(tmp_path):
    """Each trial's job runs the launcher itself (whose checkpoint() requeues the same call)."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
    from omegaconf import OmegaConf

    launcher = LocalLauncher(submitit_folder=str(tmp_path / "%j"), timeout_min=5)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    jobs = plugin_api.SubmititJobs(launcher)
    function, args = jobs.call(7, ["a=1", "hydra.sweep.subdir=trial_0007"])
    assert function is launcher and callable(launcher.checkpoint)
    assert args[:4] == (
        ["a=1", "hydra.sweep.subdir=trial_0007"],
        "hydra.sweep.dir",
        7,
        "job_id_for_7",
    )
    assert jobs.cluster == "local"
    assert jobs.executor()._executor.parameters["timeout_min"] == 5
