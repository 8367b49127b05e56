"""A killed sweep's trials: recognised on the next run, failed as "interrupted", run again.

Every trial a sweep starts carries its host, process id and a heartbeat (refreshed by a
thread while it runs). A RUNNING trial whose sweep process is gone (same host) or whose
heartbeat stopped (any host: sweeps driven from other machines) was interrupted: the next
sweep on the study marks it failed with `interrupted` set and queues its values again;
the SLURM job such a trial left running is cancelled.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotimm.sweep import plugin_api
from autotimm.sweep.trials import (
    ATTR_FAILURE,
    ATTR_HEARTBEAT,
    ATTR_HOST,
    ATTR_INTERRUPTED,
    ATTR_JOB,
    ATTR_PID,
    ATTR_RUN_DIR,
    ATTR_SURPLUS,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0  # sweeps record a heartbeat on their running trials this often
STALE_AFTER_S = 600.0  # a RUNNING trial with no heartbeat for this long was interrupted
INTERRUPTED = "interrupted: the sweep process ended while this trial ran (killed or crashed)"
SURPLUS = "surplus: asked beyond n_trials at the same moment as another sweep process's trial"


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
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial):
            continue
        attrs = {ATTR_FAILURE: INTERRUPTED, ATTR_INTERRUPTED: True}
        if not plugin_api.fail_trial(study, trial, attrs):
            continue  # finished meanwhile, or another sweep process recovered it first
        cancel_orphan_job(trial)
        if trial.params:
            study.enqueue_trial(dict(trial.params))
        recovered.append(trial.number)
    if recovered:
        log.warning(
            "Trial(s) %s were interrupted by an earlier sweep that stopped; they are marked "
            "failed (interrupted) and their values run again",
            ", ".join(map(str, recovered)),
        )
    return recovered


def cancel_orphan_job(trial: FrozenTrial) -> None:
    """Cancel the SLURM job an interrupted trial left running (its GPU is needed; its
    values run again as a new trial). Best effort: the job may have ended meanwhile."""
    job = str(trial.user_attrs.get(ATTR_JOB) or "")
    if not job.startswith("slurm:"):
        return
    job_id = job.removeprefix("slurm:")
    try:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not cancel SLURM job %s of trial %d: %s", job_id, trial.number, exc)
        return
    log.warning(
        "Trial %d's SLURM job %s, left by the stopped sweep, is cancelled", trial.number, job_id
    )


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail a trial asked beyond n_trials as surplus (it never ran and does not count);
    values queued for it (an interrupted trial's) are queued again."""
    # a live Trial has no public system attributes; its stored record does
    (stored,) = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number]
    queued = stored.system_attrs.get("fixed_params")  # Optuna's key for enqueued values
    attrs = {ATTR_FAILURE: SURPLUS, ATTR_SURPLUS: True}
    plugin_api.fail_trial(study, trial, attrs)
    if queued:
        study.enqueue_trial(dict(queued))
    log.info(
        "Trial %d: not run, the study has its n_trials (another sweep process "
        "asked for the last place at the same moment)",
        trial.number,
    )


class Heartbeat:
    """Record a heartbeat on running trials, so other sweep processes can tell they live."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self.trials: dict[int, optuna.Trial] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def start(self, trial: optuna.Trial, run_dir: Path) -> None:
        """Mark the trial as this process's (host, pid, heartbeat, run dir) and keep it beating."""
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_HEARTBEAT, time.time())
        trial.set_user_attr(ATTR_RUN_DIR, str(run_dir))
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
