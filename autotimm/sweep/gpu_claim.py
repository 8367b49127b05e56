"""A sweep trial's process takes one GPU of the sweep's pool (planned by autotimm.sweep.devices).

At the start of a trial, `claim_gpu()` takes one GPU for the *process*: an exclusive
`flock` on one lock file per GPU, held until the process exits. Loky reuses worker
processes and CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises, so a worker
keeps its GPU for every trial it runs; a worker that dies frees its GPU (the kernel
drops the lock). The claim must run before anything in the process touches CUDA.

The pool comes from the environment that `autotimm.sweep.devices.export_plan` set in the
sweeper and the trial process inherited; the variable names below are that contract.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# sweeper -> trial processes
ENV_POOL = "AUTOTIMM_SWEEP_GPUS"
ENV_SIMULATED = "AUTOTIMM_SWEEP_SIMULATED"
ENV_LOCK_DIR = "AUTOTIMM_SWEEP_LOCK_DIR"
# trial process -> its run record (autotimm.sweep.devices.device_description)
ENV_SIMULATED_GPU = "AUTOTIMM_SIMULATED_GPU"


def default_lock_dir() -> str:
    """Machine-wide (per user): sweeps started side by side never share a GPU."""
    return os.path.join(tempfile.gettempdir(), f"autotimm-gpu-locks-{os.getuid()}")


@dataclass
class Claim:
    """The GPU this process holds (for its whole life)."""

    gpu: str
    simulated: bool
    lock_path: str
    pid: int
    claimed_at: float
    _fd: int = field(repr=False, default=-1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "gpu_simulated": self.simulated,
            "worker_pid": self.pid,
            "gpu_claimed_at": self.claimed_at,
        }


_claim: Claim | None = None


def current_claim() -> Claim | None:
    """This process's GPU claim, if it made one."""
    return _claim if _claim is not None and _claim.pid == os.getpid() else None


def _cuda_already_started() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # pragma: no cover - exotic torch builds
        return False


def _owner(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _lock_path(lock_dir: Path, gpu: str, simulated: bool) -> Path:
    return lock_dir / f"{'simulated-gpu' if simulated else 'gpu'}{gpu}.lock"


def _try_lock(lock_dir: Path, pool: list[str], simulated: bool) -> Claim | None:
    """Lock the first free GPU of the pool (None when every one is held)."""
    import fcntl

    for gpu in pool:
        path = _lock_path(lock_dir, gpu, simulated)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        return Claim(gpu, simulated, str(path), os.getpid(), time.time(), fd)
    return None


def claim_gpu(
    environ: MutableMapping[str, str] | None = None,
    wait_s: float | None = None,
    poll_s: float = 0.5,
) -> Claim | None:
    """Take one GPU of the sweep's pool for this process and pin the process to it.

    A no-op (None) outside a sweep's local trial processes. Idempotent: a reused worker
    keeps the GPU it took first. Waits while every GPU is held by another process
    (another sweep on the same machine, say); `wait_s` bounds the wait (TimeoutError).
    """
    global _claim
    environ = os.environ if environ is None else environ
    pool = [g for g in environ.get(ENV_POOL, "").split(",") if g]
    if not pool:
        return None
    held = current_claim()
    simulated = environ.get(ENV_SIMULATED) == "1"
    if held is not None:
        _pin(held.gpu, simulated, environ)
        return held
    if not simulated and _cuda_already_started():
        raise RuntimeError(
            "CUDA was initialised in this process before its sweep GPU claim, so it cannot be "
            "pinned to one GPU; claim_gpu() must run before anything touches CUDA"
        )
    lock_dir = Path(environ.get(ENV_LOCK_DIR) or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    started = last_note = time.monotonic()
    while (claim := _try_lock(lock_dir, pool, simulated)) is None:
        now = time.monotonic()
        if wait_s is not None and now - started >= wait_s:
            owners = {g: _owner(_lock_path(lock_dir, g, simulated)) for g in pool}
            raise TimeoutError(
                f"no free GPU among {pool} after {wait_s:.0f} s; holders: {owners} "
                f"(lock files in {lock_dir})"
            )
        if now - last_note >= 60:
            log.info("waiting for a free GPU among %s (lock files in %s)", pool, lock_dir)
            last_note = now
        time.sleep(poll_s)
    _claim = claim
    _pin(claim.gpu, simulated, environ)
    log.info("sweep worker %d claimed %sGPU %s", os.getpid(), "simulated " * simulated, claim.gpu)
    return claim


def _pin(gpu: str, simulated: bool, environ: MutableMapping[str, str]) -> None:
    if simulated:
        environ[ENV_SIMULATED_GPU] = gpu
        environ["CUDA_VISIBLE_DEVICES"] = ""  # a pretend GPU: train on the CPU
    else:
        environ.pop(ENV_SIMULATED_GPU, None)
        environ["CUDA_VISIBLE_DEVICES"] = gpu


def release_claim() -> None:
    """Give the GPU back before the process ends (tests; workers just exit)."""
    global _claim
    held = current_claim()
    if held is not None and held._fd >= 0:
        os.close(held._fd)  # closing the descriptor drops the flock
    _claim = None
