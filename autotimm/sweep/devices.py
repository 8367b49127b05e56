"""Every device and concurrency decision: which device a run uses, a sweep's plan
(GPUs, trials at once, threads per trial) and each trial process's GPU claim.

Both sweepers call `plan_for_sweep(config)` once, before their launcher starts. The plan
follows the launcher, recognised by its class: Hydra's basic launcher runs trials one by
one in the sweeper's process; joblib and submitit-local run them in processes on this
machine; any other launcher (SLURM, Ray) gives each trial its GPU itself. Trials at once
is one key, `sweep.n_jobs` (null: one per GPU; `sweep.cpu_workers` on a CPU-only
machine); the joblib launcher's own `n_jobs` follows it. The plan exports the GPU pool in
environment variables that local trial processes inherit (loky workers of the joblib
launcher, submitit-local jobs, or the sweeper itself when trials run one after another).

At the start of a trial, `claim_gpu()` (autotimm.sweep.gpu_claim, re-exported here) takes one
GPU of that pool for the trial's process, with a lock file per GPU.

Simulation (tests, or trying the machinery on a laptop): `AUTOTIMM_SIMULATE_GPUS=N`
(or `sweep.simulate_gpus=N`) pretends N GPUs. Trials claim them exactly like real ones
but train on the CPU; `AUTOTIMM_SIMULATED_GPU` tells `results.json` the pretend GPU.

Launchers that pin GPUs themselves (SLURM via submitit, Ray with `num_gpus=1`) get no
pool: the trial records the device the launcher gave it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# the trial side of the plan; claim_gpu & co. are re-exported: devices.py is where to look
from autotimm.sweep.gpu_claim import (
    ENV_LOCK_DIR,
    ENV_POOL,
    ENV_SIMULATED,
    ENV_SIMULATED_GPU,
    Claim,
    claim_gpu,
    current_claim,
    default_lock_dir,
    release_claim,
)

__all__ = [
    "ENV_LOCK_DIR",
    "ENV_POOL",
    "ENV_SIMULATE",
    "ENV_SIMULATED",
    "ENV_SIMULATED_GPU",
    "Claim",
    "DevicePlan",
    "claim_gpu",
    "current_claim",
    "default_lock_dir",
    "device_description",
    "export_plan",
    "plan_devices",
    "plan_for_sweep",
    "release_claim",
    "visible_gpus",
]

from autotimm.sweep.launchers import IN_PROCESS, JOBLIB, REMOTE, launcher_kind
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

# user-facing switch: pretend this many GPUs (documented in README.md, "Sweeps")
ENV_SIMULATE = "AUTOTIMM_SIMULATE_GPUS"


def visible_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries; CUDA is not touched.

    CUDA_VISIBLE_DEVICES when set (SLURM and Ray set it), else `nvidia-smi`, else the
    NVIDIA driver's /proc entries. Asking torch instead would initialise CUDA in the
    sweeper process, after which trials run in it could no longer be pinned.
    """
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        devices = []
        for entry in (x.strip() for x in listed.split(",")):
            if not entry or entry.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            devices.append(entry)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if out.returncode == 0:
                return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return [str(i) for i in range(len(list(driver.iterdir())))]
    return []


@dataclass(frozen=True)
class DevicePlan:
    """Where a sweep's trials run: `gpus` (one trial per GPU), `n_jobs` trials at once,
    `threads_per_trial` CPU threads each, through a launcher of kind `launcher`."""

    gpus: tuple[str, ...] = ()
    n_jobs: int = 1
    simulated: bool = False
    lock_dir: str | None = None
    launcher: str = JOBLIB
    threads_per_trial: int = 1

    @property
    def pinned_by_launcher(self) -> bool:
        """The launcher gives each trial its GPU (SLURM, Ray): trials claim nothing."""
        return self.launcher == REMOTE

    @property
    def own_pool(self) -> bool:
        """Run trials in autotimm's own worker pool, a new one as soon as any ends.

        joblib would launch them in batches that wait for their slowest trial.
        """
        return self.launcher == JOBLIB and self.n_jobs > 1

    def thread_env(self) -> dict[str, str]:
        """Environment that limits each trial process to its share of the CPU threads."""
        return {
            name: str(self.threads_per_trial) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        }

    def describe(self) -> str:
        if self.pinned_by_launcher:
            return f"{self.n_jobs} trial(s) at once; the launcher gives each trial its GPU"
        if not self.gpus:
            return f"{self.n_jobs} trial(s) at once on the CPU (no GPU visible)"
        kind = "simulated GPU" if self.simulated else "GPU"
        return f"{self.n_jobs} trial(s) at once, one per {kind}: {', '.join(self.gpus)}" + (
            " (training on the CPU)" if self.simulated else ""
        )


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if isinstance(value, int):
        return [str(value)]
    return [str(x) for x in value]


def _gpu_pool(wanted: list[str] | None, available: list[str]) -> list[str]:
    """The GPUs asked for (all visible ones when None), checked against what is there."""
    if wanted is None:
        return available
    if len(set(wanted)) != len(wanted):
        raise UserError(f"sweep.gpus={wanted} lists a GPU twice")
    unknown = [g for g in wanted if g not in available]
    if unknown and not available:
        raise UserError(
            f"sweep.gpus={wanted}, but no GPU is visible on this machine "
            "(CUDA_VISIBLE_DEVICES / nvidia-smi). Leave sweep.gpus unset to run on the "
            f"CPU, or set {ENV_SIMULATE}=N to simulate N GPUs."
        )
    if unknown:
        raise UserError(
            f"sweep.gpus={wanted} names {unknown}, which this machine does not show; "
            f"visible GPUs: {available}"
        )
    return wanted


def _trials_at_once(pool: list[str], n_jobs: int | None, cpu_workers: int) -> int:
    if pool:
        jobs = len(pool) if n_jobs is None else int(n_jobs)
        if jobs > len(pool):
            raise UserError(
                f"sweep.n_jobs={jobs}, but the sweep has {len(pool)} GPU(s) ({', '.join(pool)}): "
                f"trials never share a GPU, so at most {len(pool)} run at once"
            )
    else:
        jobs = int(n_jobs) if n_jobs is not None else int(cpu_workers)
    if jobs < 1:
        raise UserError(f"a sweep needs at least one trial at a time, got n_jobs={jobs}")
    return jobs


def _lock_dir(simulated: bool, sweep_dir: str | None) -> str:
    if not simulated:
        return default_lock_dir()
    if sweep_dir is not None:
        return os.path.join(sweep_dir, ".gpu_locks")  # pretend GPUs: this sweep's own
    return os.path.join(tempfile.gettempdir(), f"autotimm-simulated-{os.getpid()}")


def plan_devices(
    gpus: Any = None,
    n_jobs: int | None = None,
    cpu_workers: int = 1,
    simulate_gpus: int = 0,
    lock_dir: str | None = None,
    sweep_dir: str | None = None,
    available: Iterable[str] | None = None,
) -> DevicePlan:
    """The device plan of a sweep on this machine. Raises ValueError on impossible requests.

    gpus: the GPUs to use (CUDA_VISIBLE_DEVICES entries; None: every visible one; []: none).
    n_jobs: trials at once (None: one per GPU, or cpu_workers without GPUs).
    simulate_gpus: pretend this many GPUs (trials train on the CPU).
    """
    simulated = bool(simulate_gpus)
    if simulated:
        available = [str(i) for i in range(int(simulate_gpus))]
    elif available is None:
        available = visible_gpus()
    pool = _gpu_pool(_as_list(gpus), list(available))
    jobs = _trials_at_once(pool, n_jobs, cpu_workers)
    if pool and lock_dir is None:
        lock_dir = _lock_dir(simulated, sweep_dir)
    threads = max(1, (os.cpu_count() or 1) // jobs)  # the machine's cores, shared evenly
    return DevicePlan(tuple(pool), jobs, simulated, lock_dir if pool else None, JOBLIB, threads)


def export_plan(plan: DevicePlan, environ: MutableMapping[str, str] | None = None) -> None:
    """Hand the pool to local trial processes (they inherit the environment)."""
    environ = os.environ if environ is None else environ
    for key in (ENV_POOL, ENV_SIMULATED, ENV_LOCK_DIR):
        environ.pop(key, None)
    if plan.gpus and not plan.pinned_by_launcher:
        environ[ENV_POOL] = ",".join(plan.gpus)
        environ[ENV_LOCK_DIR] = str(plan.lock_dir)
        if plan.simulated:
            environ[ENV_SIMULATED] = "1"


def plan_for_sweep(config: Any) -> DevicePlan:
    """The sweep's plan from its composed config (`sweep` block, `hydra.launcher`).

    Exports the GPU pool to local trial processes (remote launchers get none: their trials
    must not claim from it) and sets the joblib launcher's `n_jobs` to the plan's.
    Called by the sweepers before they instantiate the launcher.
    """
    from omegaconf import OmegaConf

    sweep = config.get("sweep") or {}
    kind = launcher_kind(OmegaConf.select(config, "hydra.launcher._target_", default=None))
    n_jobs = sweep.get("n_jobs")
    if kind == REMOTE:
        if n_jobs is None:
            parallel = OmegaConf.select(config, "hydra.launcher.array_parallelism")
            n_jobs = parallel or max(1, len(visible_gpus()))
        plan = DevicePlan((), int(n_jobs), launcher=REMOTE, threads_per_trial=0)
    else:
        simulate = sweep.get("simulate_gpus") or os.environ.get(ENV_SIMULATE) or 0
        planned = plan_devices(
            gpus=sweep.get("gpus"),
            n_jobs=1 if kind == IN_PROCESS else n_jobs,  # the basic launcher: one by one
            cpu_workers=int(sweep.get("cpu_workers") or 1),
            simulate_gpus=int(simulate),
            lock_dir=sweep.get("lock_dir"),
            sweep_dir=str(config.hydra.sweep.dir),
        )
        plan = replace(planned, launcher=kind)
    export_plan(plan)
    _set_launcher_jobs(config, plan)
    return plan


def _set_launcher_jobs(config: Any, plan: DevicePlan) -> None:
    """The joblib launcher's `n_jobs` (-1 by default) follows the plan: one key decides."""
    from omegaconf import OmegaConf, open_dict, read_write

    current = OmegaConf.select(config, "hydra.launcher.n_jobs")
    if current is None or plan.launcher != JOBLIB:
        return
    if current not in (-1, plan.n_jobs):
        log.warning(
            "hydra.launcher.n_jobs=%s is replaced by the sweep's plan (%d); set sweep.n_jobs",
            current,
            plan.n_jobs,
        )
    # Hydra 1.4 hands the sweeper a read-only `hydra` node, and composes each trial's config
    # again from the `hydra.overrides.hydra` list, refusing one whose launcher differs: the
    # value goes in both
    setting = f"hydra.launcher.n_jobs={plan.n_jobs}"
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.launcher.n_jobs = plan.n_jobs
        overrides = OmegaConf.select(config, "hydra.overrides.hydra", default=None)
        if overrides is not None:  # (a bare test config has none)
            given = [o for o in overrides if not o.startswith("hydra.launcher.n_jobs=")]
            config.hydra.overrides.hydra = [*given, setting]


def device_description() -> dict[str, Any]:
    """Which device trained: name, physical GPU id (as the sweep pinned it), peak memory."""
    import torch

    info: dict[str, Any] = {"device": "cpu", "gpu": None}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        info["device"] = torch.cuda.get_device_name(index)
        info["gpu"] = visible.split(",")[index] if visible else str(index)
        info["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if os.environ.get(ENV_SIMULATED_GPU) is not None:
        info["gpu"] = os.environ[ENV_SIMULATED_GPU]
        info["gpu_simulated"] = True
    return info
