"""Checks a sweep makes before its study is touched: can it reach its storage, will its
engine take its trials. Each failure is a `SweepSetupError`: one short message naming the
value and what to do, shown without a traceback (hydra_plugins.autotimm_sweeps.sweepers),
with nothing written to the study.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from autotimm.sweep.storage import masked
from autotimm.user_errors import UserError

URL_FORM = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
# the launcher keys that size a SLURM job (conf/hydra/launcher/slurm_gpu.yaml)
SLURM_REQUEST_KEYS = (
    "partition",
    "nodes",
    "tasks_per_node",
    "cpus_per_task",
    "gpus_per_node",
    "mem_gb",
    "timeout_min",
    "account",
    "qos",
    "constraint",
)


class SweepSetupError(UserError):
    """The sweep cannot start as configured (storage, engine); nothing was run or stored."""


def check_storage(storage: Any) -> None:
    """Connect once to a database storage (not a journal file or SQLite): a clear error
    when it cannot."""
    if not isinstance(storage, str) or storage.startswith(("sqlite:", "journal:")):
        return
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    shown = f"hydra.sweeper.storage={masked(storage)}"
    try:
        engine = sqlalchemy.create_engine(storage, connect_args=_connect_args(storage))
    except ModuleNotFoundError as exc:
        raise SweepSetupError(
            f"{shown}: its database driver is not installed ({exc.name}); for PostgreSQL: "
            "pip install 'autotimm[postgres]'"
        ) from None
    except (ArgumentError, NoSuchModuleError) as exc:
        raise SweepSetupError(f"{shown} is not a database URL ({exc}); use {URL_FORM}") from None
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        raise SweepSetupError(f"{shown}: cannot connect: {_reason(exc)}") from None
    finally:
        engine.dispose()
    create_schema(storage)


def create_schema(storage: str, tries: int = 5) -> None:
    """Create Optuna's tables in a new database, once for sweeps started together.

    Optuna creates them when it first opens a storage, and two processes doing so at the
    same moment collide (PostgreSQL: duplicate key on its `CREATE TYPE`); the loser finds
    the tables made when it tries again.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(tries):
        try:
            optuna.storages.RDBStorage(storage)
            return
        except (IntegrityError, ProgrammingError):
            if attempt == tries - 1:
                raise
            time.sleep(0.5 + random.random())


def _connect_args(storage: str) -> dict[str, Any]:
    # an unreachable host fails in seconds, not after the OS's TCP time-out
    return {"connect_timeout": 10} if storage.startswith("postgresql") else {}


def _reason(exc: Exception) -> str:
    """The driver's first line, and what to do about it."""
    text = str(getattr(exc, "orig", exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "password authentication failed" in text or "role" in text and "does not exist" in text:
        return f"{first}; check the user and password in the URL ({URL_FORM})"
    if "database" in text and "does not exist" in text:
        return f"{first}; create it (createdb) or name an existing one ({URL_FORM})"
    return f"{first}; check that the server runs and accepts connections there ({URL_FORM})"


def slurm_request(params: dict[str, Any]) -> str:
    """The launcher keys that size each trial's job, as `hydra.launcher.KEY=VALUE`."""
    return " ".join(
        f"hydra.launcher.{key}={params[key]}"
        for key in SLURM_REQUEST_KEYS
        if params.get(key) is not None
    )


def check_slurm_request(job_script: str, params: dict[str, Any]) -> None:
    """`sbatch --test-only` with the trials' job script (as submitit writes it): SLURM
    refuses an impossible request (no such partition, more CPUs, memory or GPUs than any
    node has) here, before the sweep asks its study for a trial, instead of a job that
    pends forever."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SweepSetupError(
            "hydra/launcher=slurm_gpu submits each trial with sbatch, which is not on this "
            "machine's PATH: run the sweep on the cluster's login node"
        )
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "check.sh"
        script.write_text(job_script)
        done = subprocess.run(
            [sbatch, "--test-only", str(script)], capture_output=True, text=True, timeout=60
        )
    if done.returncode != 0:
        reason = " ".join(
            line.removeprefix("sbatch: error: ").strip()
            for line in (done.stderr or done.stdout).splitlines()
            if line.strip()
        )
        raise SweepSetupError(
            f"SLURM refuses the trials' job request ({slurm_request(params)}): {reason}. "
            + _what_to_do(reason)
        )


def _what_to_do(reason: str) -> str:
    if "partition" in reason.lower():
        found = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60
        ).stdout.split()
        return f"Name one of the cluster's partitions: hydra.launcher.partition=NAME {found}"
    return (
        "Size it to a node of the partition (sinfo -N -l lists them), e.g. "
        "hydra.launcher.cpus_per_task=4 hydra.launcher.mem_gb=16, or name another "
        "partition: hydra.launcher.partition=NAME (sinfo -s lists them)"
    )
