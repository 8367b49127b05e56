"""Asynchronous trials on every engine: one submitit job / Ray task per trial, and a new
trial as soon as any ends (autotimm.sweep.runners, runners_submitit, runners_ray).

The submitit tests run real sweeps through hydra-submitit-launcher's local executor (real
separate processes). In each, the slow trial 0 ends only once trial 2 started (or after a
time-out): with batches of two, trial 2 would start only after trial 0 ended, and the
start/finish times would show it. Without Ray, its runner is chosen for the Ray launcher's
class and names the extra to install; real SLURM and Ray runs are in
tests/test_engines_slurm.py and test_engines_ray.py (`make test-engines`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.callbacks import Callback

from autotimm.records.results import read_record
from autotimm.sweep import launchers, runners
from autotimm.sweep.devices import DevicePlan
from autotimm.sweep.launchers import LOCAL, REMOTE, is_launcher
from tests.conftest import ROOT
from tests.test_sweeps import TINY, load_study, sweep, sweep_dir

SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
GATE_TIMEOUT_S = 120  # how long the slow trial waits for trial 2 before it gives up


# -- which runner for which launcher -----------------------------------------------------


def submitit_launcher(compose, *overrides: str) -> Any:
    """hydra-submitit-launcher's launcher from the project's composed config."""
    from hydra.utils import instantiate

    cfg = compose(["+sweeps=quick", *overrides])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg  # what Hydra's setup() gives it
    return launcher


def test_submitit_launchers_get_one_job_per_trial_from_their_own_config(compose, tmp_path):
    launcher = submitit_launcher(
        compose, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=7"
    )
    # Hydra's plugin scan may load the module twice: compare by name along the MRO
    assert is_launcher(launcher, f"{SUBMITIT}:LocalLauncher")
    runner = launchers.make_runner(DevicePlan(n_jobs=2, launcher=LOCAL), launcher)
    from autotimm.sweep.runners_submitit import SubmititRunner

    assert isinstance(runner, SubmititRunner) and runner.running == 0
    executor = runner._executor._executor  # submitit's LocalExecutor, from the launcher's keys
    assert type(executor).__name__ == "LocalExecutor"
    assert executor.parameters["timeout_min"] == 7
    assert str(executor.folder).endswith(".submitit/%j")


def test_a_bad_launcher_key_fails_before_any_trial(compose):
    launcher = submitit_launcher(compose, "hydra/launcher=submitit_local", "hydra.launcher.nodes=2")
    with pytest.raises(ValueError, match="LocalExecutor can use only one node"):
        launchers.make_runner(DevicePlan(n_jobs=2, launcher=LOCAL), launcher)


def test_joblib_and_the_basic_launcher_keep_their_runners():
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    basic = runners.LauncherRunner
    assert isinstance(launchers.make_runner(DevicePlan(n_jobs=1), JoblibLauncher()), basic)
    other = launchers.make_runner(DevicePlan(n_jobs=2, launcher=REMOTE), object())  # unknown
    assert isinstance(other, basic)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed")
def test_ray_launcher_without_ray_names_the_extra_to_install():
    # hydra-ray-launcher needs Ray, so neither is here: a class of its launcher's name stands in
    module = "hydra_plugins.hydra_ray_launcher.ray_launcher"
    launcher = type("RayLauncher", (), {"__module__": module})()
    from autotimm.sweep.engine_checks import SweepSetupError

    with pytest.raises(SweepSetupError, match=r"pip install 'autotimm\[ray\]'") as raised:
        launchers.make_runner(DevicePlan(n_jobs=2, launcher=REMOTE), launcher)
    assert "(RayLauncher) runs trials as Ray tasks" in str(raised.value)


# -- asynchronous submission, end to end ---------------------------------------------------

APP = '''
"""A sweep's task that only records when it ran: trial 0 ends once trial 2 started."""
import json, os, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from autotimm.app.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    (out / "started").write_text(json.dumps(dict(started=started, pid=os.getpid())))
    waited = False
    if cfg.sweep.trial == 0:
        successor, deadline = out.parent / "trial_0002" / "started", started + TIMEOUT
        while not successor.exists() and time.time() < deadline:
            time.sleep(0.1)
        waited = successor.exists()
    times = dict(trial=cfg.sweep.trial, started=started, finished=time.time(), pid=os.getpid(),
                 saw_successor=waited)
    (out / "times.json").write_text(json.dumps(times))
    return float(cfg.sweep.trial)


if __name__ == "__main__":
    main()
'''


def spans_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans running at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def start_app_sweep(tmp_path: Path, n_trials: int, gate_timeout_s: float) -> subprocess.Popen:
    """APP's sweep through submitit-local, 2 trials at once, from tmp_path."""
    app = tmp_path / "app.py"
    app.write_text(
        APP.replace("CONF", repr(str(ROOT / "conf"))).replace("TIMEOUT", str(gate_timeout_s))
    )
    overrides = ["+sweeps=quick", "hydra/launcher=submitit_local", "sweep.n_jobs=2"]
    return subprocess.Popen(
        [sys.executable, str(app), "-m", *overrides, f"hydra.sweeper.n_trials={n_trials}"],
        cwd=tmp_path,
        env=dict(os.environ, AUTOTIMM_OUTPUT_DIR=str(tmp_path / "outputs")),
        # files, not pipes: jobs that outlive the sweep must not keep its output open
        stdout=(tmp_path / "sweep.out").open("w"),
        stderr=(tmp_path / "sweep.err").open("w"),
        # Ctrl-C as in a terminal: a test run started in the background of a
        # non-interactive shell ignores SIGINT, and children inherit that
        preexec_fn=_sigint_as_in_a_terminal,
    )


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_submitit_trials_start_as_soon_as_any_trial_ends(tmp_path):
    """3 trials, 2 at once, each its own submitit-local job: trial 2 starts when trial 1
    ends, while trial 0 still runs."""
    proc = start_app_sweep(tmp_path, n_trials=3, gate_timeout_s=GATE_TIMEOUT_S)
    assert proc.wait(timeout=300) == 0, (tmp_path / "sweep.err").read_text()[-4000:]
    folder = sweep_dir(tmp_path, "quick")
    times = {
        t["trial"]: t
        for t in (json.loads(p.read_text()) for p in folder.glob("trial_*/times.json"))
    }
    assert sorted(times) == [0, 1, 2]
    assert times[0]["saw_successor"], "trial 2 started only after trial 0 ended"
    assert times[1]["finished"] <= times[2]["started"] < times[0]["finished"]
    assert spans_overlap([(t["started"], t["finished"]) for t in times.values()]) == 2
    assert len({t["pid"] for t in times.values()}) == 3  # one job (process) per trial
    jobs = [p for p in (folder / ".submitit").iterdir() if p.name.isdigit()]  # %j: the job id
    assert len(jobs) == 3
    study = load_study(folder, "quick")
    assert {t.number: t.value for t in study.get_trials()} == {0: 0.0, 1: 1.0, 2: 2.0}


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_a_stopped_sweep_cancels_its_running_jobs(tmp_path):
    """Ctrl-C on the sweep cancels the submitit jobs still running: no orphan holds a GPU."""
    proc = start_app_sweep(tmp_path, n_trials=2, gate_timeout_s=600)  # trial 0 waits long
    folder = sweep_dir(tmp_path, "quick")
    deadline = time.time() + 240
    # trial 1 ran to its end while trial 0 waits (under load trial 0 may still be starting)
    while not all(
        (folder / trial / name).is_file()
        for trial, name in (("trial_0001", "times.json"), ("trial_0000", "started"))
    ):
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "sweep.err").read_text()
        time.sleep(0.2)
    trial_0 = json.loads((folder / "trial_0000" / "started").read_text())["pid"]
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
        assert "cancelling trial 0 (local job" in (tmp_path / "sweep.out").read_text()
        deadline = time.time() + 30
        while pid_alive(trial_0):
            assert time.time() < deadline, "trial 0's job still runs after the sweep stopped"
            time.sleep(0.2)
    finally:
        if pid_alive(trial_0):  # the test failed: leave no orphan behind
            os.kill(trial_0, signal.SIGKILL)
    assert not (folder / "trial_0000" / "times.json").exists()  # it did not run to its end


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WaitForTrial(Callback):
    """A Lightning callback for the test below: trial `trial` starts training only once
    trial `successor` has started (its run directory exists), or after `timeout_s`."""

    def __init__(self, trial: int, successor: int, timeout_s: float) -> None:
        self.trial, self.successor, self.timeout_s = trial, successor, timeout_s

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        import time

        from hydra.core.hydra_config import HydraConfig

        out = Path(HydraConfig.get().runtime.output_dir)
        if out.name != f"trial_{self.trial:04d}":
            return
        successor = out.parent / f"trial_{self.successor:04d}" / ".hydra"
        deadline = time.time() + self.timeout_s
        while not successor.is_dir() and time.time() < deadline:
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_submitit_sweep_of_real_trials_is_asynchronous(tmp_path):
    """train.py trials through submitit-local, 2 at once: trial 1's successor (trial 2)
    starts before trial 0, which waits for it, ends (read from the trials' run records)."""
    gate = "tests.test_async_engines.WaitForTrial"
    sweep(
        tmp_path,
        "+sweeps=quick",
        "hydra/launcher=submitit_local",
        "sweep.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        *TINY,
        f"+callbacks.gate._target_={gate}",
        "+callbacks.gate.trial=0",
        "+callbacks.gate.successor=2",
        f"+callbacks.gate.timeout_s={GATE_TIMEOUT_S}",
        env={"PYTHONPATH": str(ROOT)},  # the trial processes import the gate from tests/
    )
    folder = sweep_dir(tmp_path, "quick")
    records = {n: read_record(folder / f"trial_{n:04d}") for n in range(3)}
    spans = {n: (r.sweep.started_at, r.sweep.finished_at) for n, r in records.items()}
    assert all(r.status == "completed" for r in records.values())
    assert spans[1][1] <= spans[2][0] < spans[0][1], spans
    assert spans_overlap(list(spans.values())) == 2
    assert len({r.sweep.worker_pid for r in records.values()}) == 3
    states = [t.state.name for t in load_study(folder, "quick").get_trials()]
    assert states == ["COMPLETE"] * 3


class HoldSecondEpoch(Callback):
    """For the requeue test: a run that did not resume holds at the start of its second
    epoch (the first one's last.ckpt written) until submitit's time-out signal requeues it."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        import time

        if trainer.current_epoch == 1 and trainer.ckpt_path is None:
            deadline = time.time() + self.hold_s
            while time.time() < deadline:
                time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_a_timed_out_trial_is_requeued_and_resumes_from_its_last_checkpoint(tmp_path):
    """submitit-local's time limit (1 min, signal 30 s before) hits trial 0 in its second
    epoch: submitit requeues the same job (the launcher's checkpoint) and the trial resumes
    from its last.ckpt in its own directory, while the sweep waits for it."""
    sweep(
        tmp_path,
        "+sweeps=quick",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=1",
        "hydra.sweeper.n_trials=1",
        *TINY,
        "trainer.max_epochs=2",
        "measure_cost=false",  # the resumed run must end within its own 30 s before the signal
        "+callbacks.hold._target_=tests.test_async_engines.HoldSecondEpoch",
        "+callbacks.hold.hold_s=120",
        env={"PYTHONPATH": str(ROOT)},
    )
    folder = sweep_dir(tmp_path, "quick")
    run_dir = folder / "trial_0000"
    record = read_record(run_dir)
    assert record.status == "completed" and record.epochs == 2
    (job_log,) = (folder / ".submitit").glob("*/*_0_log.err")  # one job, run twice
    log = job_log.read_text()
    assert "this job is timed-out" in log and "Restored all states from the checkpoint" in log
    assert "resuming from it" in (run_dir / "train.log").read_text()
    assert [t.state.name for t in load_study(folder, "quick").get_trials()] == ["COMPLETE"]
