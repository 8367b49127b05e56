"""The loggers start in a thread while the run loads its data (autotimm.app.loggers)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from autotimm.app.loggers import start_loggers

STARTED = threading.Event()
RELEASE = threading.Event()


class SlowLogger:
    """A logger whose start waits for the test (like W&B waiting for its service)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.hyperparameters: dict[str, Any] | None = None
        self.thread: str | None = None

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.thread = threading.current_thread().name
        STARTED.set()
        assert RELEASE.wait(10), "the test never released the logger"
        if self.fail:
            raise RuntimeError("service did not start")
        self.hyperparameters = params


def _cfg(fail: bool = False) -> Any:
    return OmegaConf.create(
        {
            "lr": 0.01,
            "copy": "${lr}",
            "logger": {"slow": {"_target_": f"{__name__}.SlowLogger", "fail": fail}},
        }
    )


@pytest.fixture(autouse=True)
def _events():
    STARTED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


def test_the_caller_goes_on_while_a_logger_starts_and_gets_the_resolved_config():
    ready = start_loggers(_cfg())
    # the caller is back while the logger is still starting (it waits for RELEASE)
    assert STARTED.wait(10)
    RELEASE.set()
    (logger,) = ready()
    assert logger.thread == "autotimm-loggers"
    assert logger.hyperparameters["copy"] == 0.01  # resolved in the caller's thread
    assert logger.hyperparameters["logger"]["slow"]["fail"] is False


def test_a_logger_that_fails_to_start_fails_the_run_or_is_finished_quietly(caplog):
    ready = start_loggers(_cfg(fail=True))
    RELEASE.set()
    with pytest.raises(RuntimeError, match="service did not start"):
        ready()
    (logger,) = ready(quiet=True)  # the run failed already: the loggers still get finished
    assert isinstance(logger, SlowLogger)
    assert "loggers did not start: RuntimeError: service did not start" in caplog.text


def test_a_run_whose_data_fails_finishes_its_started_wandb_run_as_failed(run_app, tmp_path):
    """W&B starts before the data loads: a bad data folder still ends that run as failed."""
    run = run_app("data=image_folder", f"data.root={tmp_path / 'nowhere'}", "print_config=false")
    assert run.code == 1
    assert "nowhere" in run.output
    (offline,) = (run.run_dir / "wandb").glob("offline-run-*")
    wandb_bin = Path(sys.executable).parent / "wandb"
    shown = subprocess.run(
        [str(wandb_bin), "leet", "inspect", "--summary", "--json", str(offline)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["exit_code"] == 1


def test_the_csv_logger_counts_only_an_earlier_metrics_csv_as_a_previous_log(tmp_path):
    """The run directory holds Hydra's files before the CSV logger starts: no warning for
    them. An earlier metrics.csv (a run directory used twice) keeps Lightning's warning and
    is replaced. (tests/test_app.py: a real run prints neither this nor W&B's notice.)"""
    import warnings

    from autotimm.app.loggers import RunCSVLogger

    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("Hydra's log\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RunCSVLogger(tmp_path, name="", version="").log_metrics({"a": 1.0}, step=0)
    assert not [w for w in caught if "not empty" in str(w.message)]
    (tmp_path / "metrics.csv").write_text("a,step\n9.0,0\n")
    with pytest.warns(UserWarning, match="exists and is not empty"):
        writer = RunCSVLogger(tmp_path, name="", version="").experiment
    assert not (tmp_path / "metrics.csv").exists() and Path(writer.log_dir) == tmp_path
    assert (tmp_path / "train.log").read_text() == "Hydra's log\n"


def test_the_wandb_logger_hands_wandb_no_anonymous_setting_unless_asked(tmp_path):
    from autotimm.app.loggers import WandbLogger

    quiet = WandbLogger(offline=True, save_dir=str(tmp_path), project="p")
    assert "anonymous" not in quiet._wandb_init  # W&B warns for any value given, None too
    assert quiet._wandb_init["dir"] == str(tmp_path)  # the rest is Lightning's
    asked = WandbLogger(offline=True, save_dir=str(tmp_path), project="p", anonymous=True)
    assert asked._wandb_init["anonymous"] == "allow"
