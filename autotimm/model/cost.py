"""A trained model's cost on its own device: parameters, GFLOPs, latency and throughput.

`measure_cost(model, input_size, device)` runs after training (`results.json` "model");
every value can be a sweep objective (`model/latency_ms`). GFLOPs come from torch's own
flop counter (`torch.utils.flop_counter.FlopCounterMode`), which counts a multiply-add as
2 flops: resnet18 at 224 px is timm's 1.82 GMACs = 3.63 GFLOPs here. It counts matmuls,
convolutions and attention, not normalisation or activations (like fvcore and thop).

The model is measured as it runs (compiled, channels_last, autocast) and left as it was:
same device, same train/eval flag on every submodule, same weights (no grad, eval mode).
A measurement that fails gives None and a warning; it never fails the run.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from autotimm.private_apis import COMPILED_CALL_IMPL
from autotimm.records.results import ModelCost
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

# Lightning precision -> autocast dtype (anything else: no autocast)
_AUTOCAST = {
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
    "bf16": torch.bfloat16,
    "16": torch.float16,
}


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision (`trainer.precision`): "bf16-mixed" ->
    bfloat16, "16-mixed" -> float16; None for full or true-half precision."""
    return _AUTOCAST.get(str(precision))


def count_params_m(model: nn.Module) -> float:
    """All parameters (trainable or frozen, shared ones once), in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def measure_cost(
    model: nn.Module,
    input_size: tuple[int, int, int],
    device: torch.device | str,
    *,
    throughput_batch: int | None = None,
    autocast: torch.dtype | None = None,
    channels_last: bool | None = None,
    budget_s: float = 0.25,
) -> ModelCost:
    """Measure `model` on `device` for (C, H, W) images and leave it as it was.

    throughput_batch: images per forward for throughput (None: 32 on CPU, 256 on GPU;
    halved on out-of-memory). autocast: the run's mixed-precision dtype (`autocast_dtype`).
    channels_last: the input layout (None: the layout of the model's 4-D weights).
    budget_s: time for each of latency and throughput after warm-up (at least one forward).
    """
    size = _checked_size(input_size)
    device = torch.device(device)
    cost = ModelCost(params_m=round(count_params_m(model), 4))
    try:
        with _measuring(model, device):
            layout = _uses_channels_last(model) if channels_last is None else channels_last
            images = _image_maker(model, size, device, layout)

            def forward(x: torch.Tensor) -> Any:
                with _autocast(device, autocast):
                    return model(x)

            batch = throughput_batch or (32 if device.type == "cpu" else 256)
            cost.gflops = _safely("GFLOPs", lambda: _gflops(model, forward, images(1)))
            cost.latency_ms = _safely(
                "latency", lambda: _latency_ms(forward, images, device, budget_s)
            )
            cost.throughput_img_s = _safely(
                "throughput", lambda: _throughput(forward, images, device, batch, budget_s)
            )
    except Exception as exc:  # e.g. the model does not fit the device: keep the parameter count
        log.warning("model cost: not measured on %s (%s: %s)", device, type(exc).__name__, exc)
    log.info("model cost on %s: %s", device, cost.to_dict())
    return cost


def _image_maker(
    model: nn.Module, size: tuple[int, int, int], device: torch.device, channels_last: bool
) -> Callable[[int], torch.Tensor]:
    """Random image batches in the model's dtype (bf16-true models get bf16) and layout."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)

    def images(batch: int) -> torch.Tensor:
        x = torch.randn(batch, *size, device=device, dtype=dtype)
        return x.to(memory_format=torch.channels_last) if channels_last else x

    return images


def _checked_size(input_size: Any) -> tuple[int, int, int]:
    """(C, H, W) as ints; anything else is the caller's error, said plainly."""
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else ()
    if len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
        raise UserError(
            f"input_size={input_size!r}: expected 3 positive ints (channels, height, width), "
            "e.g. datamodule.data_config['input_size']"
        )
    return size  # type: ignore[return-value]


def _safely(what: str, measure: Callable[[], float]) -> float | None:
    """A measurement, or None with a warning: the run's record matters more than its cost."""
    try:
        return measure()
    except Exception as exc:  # any failure (counter, compile, memory): no value, not a failed run
        log.warning("model cost: %s not measured (%s: %s)", what, type(exc).__name__, exc)
        return None


@contextmanager
def _measuring(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no autograd, on `device`; restores every submodule's flag and the device.

    Flags are restored one by one (not `model.train(mode)`), so a frozen backbone kept in
    eval mode inside a training model stays so.
    """
    flags = [(module, module.training) for module in model.modules()]
    home = next((p.device for p in model.parameters()), device)
    try:
        model.to(device)  # keeps the memory format (channels_last stays channels_last)
        model.eval()
        with torch.inference_mode():
            yield
    finally:
        model.to(home)
        for module, training in flags:
            module.training = training
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the throughput batch's memory goes back to the run


@contextmanager
def _uncompiled(model: nn.Module) -> Iterator[None]:
    """The module's eager forward while inside: the flop counter sees aten ops, not the
    kernels of an in-place `model.compile()` (which may count nothing)."""
    compiled = getattr(model, COMPILED_CALL_IMPL, None)
    setattr(model, COMPILED_CALL_IMPL, None)
    try:
        yield
    finally:
        setattr(model, COMPILED_CALL_IMPL, compiled)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _uses_channels_last(model: nn.Module) -> bool:
    """True when the model's 4-D weights are stored channels_last."""
    for p in model.parameters():
        if p.dim() == 4 and p.is_contiguous() != p.is_contiguous(memory_format=torch.channels_last):
            return p.is_contiguous(memory_format=torch.channels_last)
    return False


def _gflops(model: nn.Module, forward: Callable, x: torch.Tensor) -> float:
    """GFLOPs of one image (FlopCounterMode: 2 flops per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with _uncompiled(model), FlopCounterMode(display=False) as counter:
        forward(x)
    flops = counter.get_total_flops()
    if flops <= 0:
        raise RuntimeError("the flop counter saw no matmul or convolution")
    return round(flops / 1e9, 4)


def _timed(
    forward: Callable, x: torch.Tensor, device: torch.device, budget_s: float, warmup: int
) -> float:
    """Median seconds of one forward: `warmup` untimed forwards (a compiled model compiles
    for a new shape here), then up to 10 timed ones within `budget_s` (at least one)."""
    for _ in range(warmup):
        forward(x)
    _sync(device)
    times: list[float] = []
    while len(times) < 10 and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        forward(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _latency_ms(forward: Callable, images: Callable, device: torch.device, budget: float) -> float:
    return round(_timed(forward, images(1), device, budget, warmup=2) * 1e3, 3)


def _throughput(
    forward: Callable, images: Callable, device: torch.device, batch: int, budget: float
) -> float:
    """Images per second at `batch` (halved until it fits the device's memory); one
    warm-up, as the latency's warm-ups already warmed the model."""
    while True:
        try:
            return round(batch / _timed(forward, images(batch), device, budget, warmup=1), 1)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            log.info("model cost: out of memory, throughput at batch %d", batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
