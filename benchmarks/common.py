"""Shared pieces of the benchmarks: the project's composed config, device-resident batches,
a step timer, and the JSON line every benchmark prints last.

Heavy imports (torch, lightning, hydra) happen inside the functions, so ``--help`` is fast.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose(overrides: list[str]) -> Any:
    """The project's own config (conf/config.yaml + overrides), as train.py composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from autotimm.app.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def backbone_overrides(model: str) -> list[str]:
    """A backbone group name (resnet50, vit_b16, ...) or any timm model name."""
    if (ROOT / "conf" / "backbone" / f"{model}.yaml").is_file():
        return [f"backbone={model}"]
    return [f"backbone.model_name={model}"]


def resolve_device(name: str | None) -> Any:
    import torch

    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str | None, device: Any) -> str:
    """The project's default (bf16-mixed on bf16-capable GPUs, else 32-true) unless given."""
    if precision:
        return precision
    from autotimm.app.resolvers import auto_precision

    return auto_precision() if device.type == "cuda" else "32-true"


def prepare(args: Any) -> tuple[Any, str]:
    """The shared start of every benchmark: quiet Lightning, threads, device, precision."""
    quiet_lightning()
    import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK)

    from autotimm.startup import drop_nvml_check_without_nvml

    drop_nvml_check_without_nvml()  # as autotimm.app.run does: neither side pays the probe
    set_threads(getattr(args, "threads", None))
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    set_fast_defaults(device)
    return device, precision


def set_fast_defaults(device: Any) -> None:
    """What autotimm.app.run does on a GPU (TF32 matmuls), applied to both sides alike."""
    import torch

    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def set_threads(threads: int | None) -> None:
    """Pin torch's CPU threads (1 keeps CPU timings stable on a shared machine)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def loadavg() -> float | None:
    """The 1-minute load average (how busy the machine was), None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceBatches:
    """``steps`` batches that already live on the device (no data loading at all)."""

    def __init__(self, images: Any, labels: Any, steps: int) -> None:
        self.images, self.labels, self.steps = images, labels, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels


def synthetic_batch(
    batch_size: int, image_size: int, num_classes: int, device: Any, channels_last: bool
) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
    images = images.to(device)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device)


CLOCKS = ("wall", "cpu")
# wall time outside the timed compute (`compute_timed_apart`): step_costs.py only
PYTHON_CLOCK = "python"
_compute_seconds = [0.0]


def clock(name: str = "wall") -> Any:
    """The timer: wall-clock seconds, or the process's CPU seconds (all its threads).

    On a CPU shared with other jobs the CPU clock leaves out the time the process waited
    for a core, which would otherwise land on whichever side ran while the machine was busy.
    `python`: wall seconds minus those inside the compute `compute_timed_apart` wraps.
    """
    if name == PYTHON_CLOCK:
        return lambda: time.perf_counter() - _compute_seconds[0]
    if name not in CLOCKS:
        raise SystemExit(f"--clock {name!r}: accepted {list(CLOCKS)}")
    return time.process_time if name == "cpu" else time.perf_counter


@contextmanager
def compute_timed_apart(*modules: Any) -> Iterator[None]:
    """Inside, the time in `modules`' forward, autograd's backward and Adam/AdamW/SGD's
    update math counts as compute, which the `python` clock leaves out: what remains of a
    step is the Python around the math (a loop's, Lightning's, the callbacks'), with the
    noise of a shared CPU's compute speed taken out. CPU steps only (no syncs)."""
    import importlib

    import torch.autograd

    # torch.optim's package deletes its submodules' names: import them by name
    adam = importlib.import_module("torch.optim.adam")
    sgd = importlib.import_module("torch.optim.sgd")

    def timed(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                _compute_seconds[0] += time.perf_counter() - start

        return wrapper

    # the names torch.autograd.backward and the optimizers' step() call
    patched = [
        (torch.autograd, "_engine_run_backward"),
        (adam, "adam"),
        (sgd, "sgd"),
        *((module, "forward") for module in dict.fromkeys(modules)),
    ]
    originals = [(owner, name, owner.__dict__.get(name)) for owner, name in patched]
    for owner, name in patched:
        setattr(owner, name, timed(getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original in originals:
            if original is None:  # a module's forward came from its class
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def step_timer(warmup: int, total: int, clock_name: str = "wall") -> Any:
    """A Lightning callback timing training batches ``warmup``..``total - 1`` of a fit.

    Batches are counted across epochs; host-device syncs happen only at the start and the
    end of the timed window, so data loading, transfer and on-device transforms count.
    """
    now = clock(clock_name)
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.end: float | None = None
            self.seen = 0
            self.images = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.seen == warmup:
                sync(pl_module.device)
                self.start = now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.seen >= warmup:
                self.images += int(batch[1].shape[0])
            self.seen += 1
            if self.seen == total:
                sync(pl_module.device)
                self.end = now()
                trainer.should_stop = True

        @property
        def images_per_s(self) -> float | None:
            if self.start is None or self.end is None or self.images == 0:
                return None
            return self.images / (self.end - self.start)

    return StepTimer()


def fit_timed(
    cfg: Any,
    model: Any,
    warmup: int,
    steps: int,
    callbacks: list[Any],
    clock_name: str = "wall",
    logger: Any = False,
    **fit: Any,
):
    """Fit ``model`` with the trainer node of ``cfg`` for ``warmup + steps`` batches.

    No validation or checkpointing (the training step and the data path only); no logger
    unless one is given. Returns the timed images per second.
    """
    from autotimm.app.compose import build_trainer

    timer = step_timer(warmup, warmup + steps, clock_name)
    extra: dict[str, Any] = {}
    if not callbacks:
        extra = {"enable_progress_bar": False, "enable_model_summary": False}
    trainer = build_trainer(
        cfg,
        [timer, *callbacks],
        logger,
        enable_checkpointing=False,
        max_epochs=-1,
        max_steps=warmup + steps,
        limit_train_batches=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **extra,
    )
    trainer.fit(model, **fit)
    model.zero_grad(set_to_none=True)
    return timer.images_per_s


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def environment(device: Any) -> dict[str, Any]:
    """Versions and the device, recorded with every result."""
    import lightning
    import timm
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    return {
        "threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def emit(result: dict[str, Any], out_dir: str | None) -> None:
    """Print the result as the last line (JSON) and append it to ``out_dir``/results.jsonl."""
    line = json.dumps(result, sort_keys=False)
    if out_dir:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "results.jsonl", "a") as f:
            f.write(line + "\n")
    sys.stdout.flush()
    print(line, flush=True)


def quiet_lightning() -> None:
    """Keep Lightning's info lines and tips out of the benchmark output."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
