"""The run record (`results.json`): one typed definition, written and read only here.

Every outcome a run can have is a `RunRecord` with a `status`:

- ``completed``: trained and tested; `objective.value` is the best `optimized_metric`;
- ``failed``: raised (bad values, NaN loss, out of memory, ...); `failure` says why;
- ``interrupted``: stopped by Ctrl-C, a signal or a preemption; resume from `last.ckpt`;
- ``pruned``: a sweep trial the pruner stopped early; `pruned` holds the epoch and value.

Sweeps, `autotimm.compare` and the tests read runs back through `read_record`; nothing
else names the file. The README's "Outputs" section documents the fields below.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from autotimm.user_errors import UserError

RESULTS_FILE = "results.json"

Status = Literal["completed", "failed", "interrupted", "pruned"]
STATUSES: tuple[str, ...] = ("completed", "failed", "interrupted", "pruned")


class RecordError(UserError):
    """A results.json that cannot be read as a run record."""


@dataclass
class Objective:
    """The value a sweep optimises: `optimized_metric` (`name`) in `optimized_mode` (`mode`)."""

    name: str | None
    value: float | None = None
    mode: str = "max"


@dataclass
class Pruned:
    """Where the pruner stopped a trial: the last validation epoch and its objective value.

    A cross-validated trial (`sweep.cross_validate=true`) is judged after each fold:
    `fold` is the last fold it ran (0-based), `value` the mean over the folds it ran and
    `epoch` that fold's last epoch."""

    epoch: int
    value: float | None
    fold: int | None = None


@dataclass
class ModelCost:
    """What a model costs at inference (autotimm.model.cost): millions of parameters,
    GFLOPs per image (2 flops per multiply-add), batch-1 latency in ms and images per
    second at a larger batch. Any of them can be a sweep objective (`model/latency_ms`)."""

    params_m: float | None = None
    gflops: float | None = None
    latency_ms: float | None = None
    throughput_img_s: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass
class SweepInfo:
    """A sweep trial's bookkeeping (absent for single runs)."""

    name: str | None = None
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the swept values of this trial
    worker_pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    gpu: str | None = None  # the GPU this trial's process claimed from the sweep's pool
    gpu_simulated: bool = False
    gpu_claimed_at: float | None = None


@dataclass
class RunRecord:
    """One run's outcome, as written to `<run dir>/results.json`."""

    status: Status
    objective: Objective  # the (first) objective
    run_dir: str
    overrides: list[str] = field(default_factory=list)  # the command line's overrides
    objectives: list[Objective] = field(default_factory=list)  # all, when several
    wall_time_s: float | None = None
    device: str | None = None  # "cpu" or the CUDA device's name
    gpu: str | None = None  # the physical GPU id (as CUDA_VISIBLE_DEVICES names it)
    gpu_simulated: bool = False
    peak_gpu_memory_mb: float | None = None
    # completed (and pruned) runs
    best_model_path: str | None = None
    last_model_path: str | None = None
    val: dict[str, float | None] = field(default_factory=dict)  # the best epoch's val/...
    best_epoch: int | None = None
    test: dict[str, float | None] = field(default_factory=dict)  # test/... of the best ckpt
    epochs: int | None = None
    global_step: int | None = None
    train_images_per_s: float | None = None
    num_classes: int | None = None
    batch_size: int | None = None  # as trained (tune_batch_size=true may change it)
    compile: bool = False
    # k-fold cross-validation (data.folds / data.fold): the validation fold and the count
    fold: int | None = None
    folds: int | None = None
    # a cross-validated run (sweep.cross_validate=true, autotimm.app.cross_validation): the
    # objective of each fold it ran, in fold order (its objective is their mean; each fold
    # has its own record in <run dir>/fold_<f>/)
    fold_values: list[float | None] | None = None
    # failed / interrupted runs
    failure: str | None = None  # `ErrorType: message`, one line
    traceback: str | None = None  # the last frames
    pruned: Pruned | None = None
    model: ModelCost | None = None  # the trained model's cost (measure_cost=true)
    sweep: SweepInfo | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"run status {self.status!r} not accepted; one of {STATUSES}")

    @property
    def objective_value(self) -> float | None:
        return self.objective.value

    def value(self, name: str) -> float | None:
        """Any number of the record by name: `val/accuracy`, `test/loss`,
        `model/latency_ms`, `epochs`, `wall_time_s`, ... (None when absent)."""
        section, _, key = name.partition("/")
        if section in ("val", "test"):
            found = (self.val if section == "val" else self.test).get(name)
        elif section == "model" and key:
            found = getattr(self.model, key, None) if self.model else None
        else:
            found = getattr(self, name, None) if not key else None
        return float(found) if isinstance(found, (int, float)) and found is not True else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (sweep, pruned, model, fold_values and pruned's fold left out when
        absent)."""
        data = asdict(self)
        for key in ("sweep", "pruned", "model", "fold_values"):
            if data[key] is None:
                del data[key]
        if data.get("pruned") and data["pruned"]["fold"] is None:
            del data["pruned"]["fold"]  # epoch pruning: {epoch, value} as before
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Build a record from its JSON form; unknown keys (newer versions) are ignored."""
        if not isinstance(data, dict) or "status" not in data:
            raise RecordError(f"not a run record (no status): {str(data)[:200]}")
        try:
            known = _known(cls, data)
            known["objective"] = Objective(**_known(Objective, data.get("objective") or {}))
            known["objectives"] = [
                Objective(**_known(Objective, item)) for item in data.get("objectives") or []
            ]
            if data.get("sweep") is not None:
                known["sweep"] = SweepInfo(**_known(SweepInfo, data["sweep"]))
            if data.get("pruned") is not None:
                known["pruned"] = Pruned(**_known(Pruned, data["pruned"]))
            if data.get("model") is not None:
                known["model"] = ModelCost(**_known(ModelCost, data["model"]))
            known.setdefault("run_dir", "")
            return cls(**known)
        except (TypeError, AttributeError) as exc:  # a field of the wrong shape
            raise RecordError(f"not a run record: {exc}") from exc


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be a mapping, got {data!r}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def record_fields() -> list[tuple[str, str]]:
    """(name, type) of every RunRecord field, for documentation."""
    return [(f.name, str(f.type)) for f in dataclasses.fields(RunRecord)]


def record_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / RESULTS_FILE


def has_record(run_dir: str | os.PathLike[str]) -> bool:
    return record_path(run_dir).is_file()


def write_record(run_dir: str | os.PathLike[str], record: RunRecord) -> Path:
    """Write the record atomically (readers never see half a file)."""
    path = record_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2, default=str))
    tmp.replace(path)
    return path


def read_record(run_dir: str | os.PathLike[str]) -> RunRecord | None:
    """The run's record; None when it wrote none; RecordError when the file is unreadable."""
    path = record_path(run_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path} is not readable JSON: {exc}") from exc
    return RunRecord.from_dict(data)


_INNER_ERROR = re.compile(r"\b(\w+(?:Error|Exception|Interrupt)): (.+?)(?: -{4,}|$)")


def failure_reason(exc: BaseException, limit: int = 1000) -> str:
    """`TypeName: message` on one line, short enough for a table and a study attribute.

    Errors that carry another process's traceback as text (submitit's FailedJobError)
    are reduced to that traceback's last error line.
    """
    message = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {message}"
    if "Traceback (most recent call last)" in message:
        inner = _INNER_ERROR.findall(message)
        if inner:
            name, detail = inner[-1]
            text = f"{type(exc).__name__}: {name}: {detail.strip()}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
