"""What a sweep checks before it touches its study (autotimm.sweep.engine_checks and
identity): an unreachable or refusing storage, Ray missing, and a rerun whose fixed
settings differ from the study's trials each stop it with one short message, nothing
written to the study. (SLURM's refusals and a wrong password need the real servers:
tests/test_engines_*.py, `make test-engines`.)"""

from __future__ import annotations

import pytest

from autotimm.sweep.engine_checks import SweepSetupError, check_storage
from autotimm.sweep.identity import ATTR_IDENTITY, check_identity, identity, suggested_name
from tests.test_sweeps import TINIEST, sweep, sweep_dir


def _study(tmp_path, name="lr_mixup_ls"):
    """A study in the folder's journal file (where a sweep keeps it by default)."""
    import optuna

    from autotimm.sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"journal:{tmp_path / 'study.journal'}"
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    return study, url


def test_a_study_keeps_the_fixed_settings_of_its_first_sweep(tmp_path):
    study, url = _study(tmp_path)
    first = {"backbone": "resnet18", "data": "digits", "logger": "csv", "sweep.n_jobs": 2}
    check_identity(study, url, first)  # a new study records its settings
    assert study.user_attrs[ATTR_IDENTITY] == {"backbone": "resnet18", "data": "digits"}
    # where it logs or how many trials run at once does not change what a trial trains
    check_identity(study, url, {"backbone": "resnet18", "data": "digits", "logger": "wandb"})
    with pytest.raises(SweepSetupError) as refused:
        check_identity(study, url, {"backbone": "vit_s16", "data": "digits"})
    message = str(refused.value)
    assert "backbone: resnet18 -> vit_s16" in message
    assert "run it with its settings (backbone=resnet18 data=digits)" in message
    assert message.endswith("sweep.name=lr_mixup_ls-vit_s16")
    with pytest.raises(SweepSetupError, match=r"data: digits -> \(default\)"):
        check_identity(study, url, {"backbone": "resnet18"})
    assert identity({"+callbacks.x._target_": "a", "seed": 3}) == {"seed": "3"}
    many = suggested_name("s", {"a": "1", "b": "2", "c": "3"}, ["a", "b", "c"])
    assert many.startswith("s-") and len(many) == 10  # a digest, not a long list


def test_a_study_from_before_takes_its_first_trials_settings(tmp_path):
    from autotimm.sweep.trials import ATTR_FIXED

    study, url = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr(ATTR_FIXED, {"backbone": "resnet18", "print_config": "False"})
    study.tell(trial, 0.5)
    with pytest.raises(SweepSetupError, match="resnet18 -> convnext_tiny"):
        check_identity(study, url, {"backbone": "convnext_tiny"})
    assert ATTR_IDENTITY not in study.user_attrs  # nothing written


def test_unreachable_or_unknown_storage_is_named_with_what_to_do():
    with pytest.raises(SweepSetupError) as refused:
        check_storage("postgresql://me:secret@127.0.0.1:1/autotimm")
    message = str(refused.value)
    assert "hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/autotimm" in message
    assert "cannot connect" in message and "Connection refused" in message
    assert "secret" not in message and "postgresql://USER:PASSWORD@HOST:5432/DATABASE" in message
    with pytest.raises(SweepSetupError, match="driver is not installed.*pip install"):
        check_storage("mysql://me:pw@127.0.0.1:1/db")  # no MySQL driver here
    check_storage("sqlite:///anything.db")  # SQLite needs no server


def test_ray_missing_names_the_extra_to_install(monkeypatch):
    """Where hydra-ray-launcher is absent, `ray_gpu` composes with a stand-in launcher whose
    setup says what to install (stored in Hydra's ConfigStore at plugin discovery)."""
    import importlib

    from hydra.core.config_store import ConfigStore

    import hydra_plugins.autotimm_sweeps.missing_ray as missing_ray

    launchers = ConfigStore.instance().repo.setdefault("hydra", {}).setdefault("launcher", {})
    monkeypatch.setitem(launchers, "ray.yaml", launchers.get("ray.yaml"))  # restored after
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    importlib.reload(missing_ray)
    node = ConfigStore.instance().load("hydra/launcher/ray.yaml").node
    assert node._target_.endswith("MissingRayLauncher") and "init" in node.ray
    with pytest.raises(SweepSetupError, match=r"pip install 'autotimm\[ray\]'"):
        missing_ray.MissingRayLauncher(ray=node.ray).setup(
            hydra_context=None, task_function=None, config=None
        )


def test_refused_sweeps_say_why_in_one_line_and_touch_nothing(tmp_path):
    """A real rerun of a study with another backbone, and an unreachable PostgreSQL: exit 1,
    one short message, no traceback, the study as it was."""
    folder = sweep_dir(tmp_path, "quick")
    folder.mkdir(parents=True)
    study, _ = _study(folder, name="quick")
    check_identity(study, None, dict(o.split("=", 1) for o in TINIEST))
    other = [o.replace("backbone=resnet18", "backbone=resnet50") for o in TINIEST]
    proc = sweep(tmp_path, "+sweeps=quick", *other, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "backbone: resnet18 -> resnet50" in output and "sweep.name=quick-resnet50" in output
    assert study.get_trials() == [] and not (folder / "trial_0000").exists()
