"""What keeps the framework's per-training-step Python small (issue 13), and that each piece
changes nothing a run computes: the Trainer's quiet profiler, ImageClassifier's plain
attributes, the in-place epoch loss sum, and the NVML probe Lightning switches on."""

from __future__ import annotations

import ctypes
import os
import sys

import lightning as L
import pytest
import torch
from helpers_library import digits_loader, make_trainer
from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

from autotimm import ImageClassifier
from autotimm.app.compose import build_trainer
from autotimm.metrics.stage_logs import LossMean
from autotimm.startup import drop_nvml_check_without_nvml
from autotimm.training.profiler import QuietProfiler


def test_trainer_gets_the_quiet_profiler_unless_one_is_configured(compose):
    trainer = build_trainer(compose(["trainer.accelerator=cpu"]), [], [])
    assert type(trainer.profiler) is QuietProfiler
    assert isinstance(trainer.profiler, PassThroughProfiler)  # Lightning's default, same API
    # a configured profiler is the user's (debug=profiler: Lightning's SimpleProfiler)
    chosen = build_trainer(compose(["trainer.accelerator=cpu", "debug=profiler"]), [], [])
    assert isinstance(chosen.profiler, SimpleProfiler)
    # an explicit argument wins too
    explicit = build_trainer(compose(["trainer.accelerator=cpu"]), [], [], profiler="simple")
    assert isinstance(explicit.profiler, SimpleProfiler)
    # Lightning refuses any profiler in barebones mode: none is added there
    barebones = [
        "trainer.accelerator=cpu",
        "+trainer.barebones=true",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=0",
        "trainer.num_sanity_val_steps=0",
    ]
    assert build_trainer(compose(barebones), [], []).barebones is True


def test_quiet_profiler_contexts_nest_and_record_nothing():
    profiler = QuietProfiler()
    with profiler.profile("outer"), profiler.profile("inner"), profiler.profile("outer"):
        pass
    with pytest.raises(KeyError):  # exceptions pass through, as with Lightning's
        with profiler.profile("raises"):
            raise KeyError("x")
    assert profiler.summary() == ""


def test_plain_attributes_skip_module_registration_others_do_not():
    model = ImageClassifier("test_resnet", num_classes=3, metrics=[])
    model._current_fx_name = "training_step"
    model._log_step = True
    assert model.__dict__["_current_fx_name"] == "training_step"
    assert model.__dict__["_log_step"] is True
    # everything else still goes through nn.Module: submodules, parameters, buffers
    model.extra = torch.nn.Linear(2, 2)
    model.scale = torch.nn.Parameter(torch.ones(1))
    assert "extra" in model._modules and "extra" not in model.__dict__
    assert "scale" in model._parameters
    assert any(name == "scale" for name, _ in model.named_parameters())


def test_epoch_loss_sum_in_place_keeps_the_weighted_mean_and_the_losses():
    mean = LossMean()
    first = torch.tensor(1.0, dtype=torch.bfloat16)
    second = torch.tensor(4.0, dtype=torch.bfloat16)
    mean.update(first, 2)
    mean.update(second, 1)
    assert mean.total.dtype == torch.float32  # half-precision losses add into float32
    assert mean.mean().item() == pytest.approx(2.0)
    assert first.item() == 1.0 and second.item() == 4.0  # the step's losses are untouched
    mean.reset()
    mean.update(torch.tensor(3.0), 4)
    assert mean.mean().item() == pytest.approx(3.0) and mean.count == 4


@pytest.mark.parametrize("loadable", [False, True])
def test_nvml_probe_dropped_only_where_nvml_cannot_load(monkeypatch, loadable):
    if sys.platform != "linux":
        pytest.skip("the probe loads libnvidia-ml.so.1: Linux only")

    def fake_cdll(name, *args, **kwargs):
        assert name == "libnvidia-ml.so.1"
        if not loadable:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    monkeypatch.setattr(torch.version, "cuda", "12.4")  # a CUDA build of torch
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    assert drop_nvml_check_without_nvml() is (not loadable)
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == (None if not loadable else "1")
    # ROCm and CPU-only builds keep it (ROCm's fork-safe device count goes through amdsmi)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    assert drop_nvml_check_without_nvml() is False
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    # unset or "0": nothing to do, and CDLL is not even tried
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: pytest.fail("probed NVML"))
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")
    assert drop_nvml_check_without_nvml() is False
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"


@pytest.mark.parametrize("name", ["training_step", "validation_step", "test_step", "predict_step"])
def test_precomputed_step_signatures_read_as_the_code_does(name):
    """Lightning asks `inspect.getfullargspec` of the step methods on every batch; the
    precomputed signature gives the answer the code object gives."""
    import inspect
    import types

    function = getattr(ImageClassifier, name)
    assert "__signature__" in function.__dict__  # the fast path is taken
    plain = types.FunctionType(function.__code__, function.__globals__, name, function.__defaults__)
    plain.__annotations__ = function.__annotations__
    model = ImageClassifier("test_resnet", num_classes=3, metrics=[])
    assert inspect.getfullargspec(getattr(model, name)) == inspect.getfullargspec(
        types.MethodType(plain, model)
    )

    class Custom(ImageClassifier):  # a subclass's own step is read from its code
        def training_step(self, batch, batch_idx, extra=None):
            return super().training_step(batch, batch_idx)

    custom = Custom("test_resnet", num_classes=3, metrics=[])
    assert inspect.getfullargspec(custom.training_step).args == [
        "self",
        "batch",
        "batch_idx",
        "extra",
    ]


class _BetweenBatches(L.Callback):
    """At each batch's start: how many values Lightning converted for the progress bar
    since the last batch started, and what the bar and callbacks were shown."""

    def __init__(self, converted: list[int]) -> None:
        self.converted = converted
        self.seen: list[tuple[int, int, float | None, float | None]] = []
        self._last = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(trainer, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(trainer, trainer.num_training_batches)

    def _record(self, trainer, batch_idx: int) -> None:
        delta = self.converted[0] - self._last
        bar = trainer.progress_bar_metrics.get("train/loss")
        callback = trainer.callback_metrics.get("train/loss")
        self._last = self.converted[0]  # these reads convert too: not the loop's
        self.seen.append((batch_idx, delta, bar, None if callback is None else float(callback)))


@pytest.mark.parametrize("val_check_interval", [None, 3])
def test_step_values_are_converted_once_per_logging_step_and_stay_visible(
    monkeypatch, val_check_interval
):
    """Lightning rebuilds its progress-bar dict from every valid logged value after every
    batch (`.item()` each: a host sync per step on a GPU). After a logging step's values are
    shown, the next steps leave them alone: no conversions on the steps between, while the
    bar and callback metrics keep showing the last logged loss. With a validation right after
    each logging step (val_check_interval=3) too: its steps must not spoil that."""
    from lightning.pytorch.trainer.connectors.logger_connector import result

    converted = [0]
    original = result.convert_tensors_to_scalars

    def counting(value):
        converted[0] += 1
        return original(value)

    monkeypatch.setattr(result, "convert_tensors_to_scalars", counting)
    model = ImageClassifier("test_resnet", num_classes=10, metrics=[], scheduler="none")
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    watch = _BetweenBatches(converted)
    trainer = make_trainer(
        limit_train_batches=8,
        log_every_n_steps=3,
        val_check_interval=val_check_interval,
        callbacks=[Losses(), watch],
    )
    validation = digits_loader(1000, 16, 16) if val_check_interval else None
    trainer.fit(model, digits_loader(0, 128, 16), validation)
    # (batch started, conversions during the previous batch, bar's loss, callbacks' loss)
    by_batch = {index: (delta, bar, callback) for index, delta, bar, callback in watch.seen}
    logging_batches = {2, 5, 7}  # global steps 3 and 6 (every 3rd) and the epoch's last
    for index in range(1, 9):
        delta, bar, callback = by_batch[index]
        previous = index - 1
        if previous in logging_batches:
            assert delta > 0, (index, watch.seen)
        else:
            assert delta == 0, (index, watch.seen)
        last_logged = max((b for b in logging_batches if b <= previous), default=None)
        if last_logged is None:
            assert bar is None and callback is None
        else:  # what users see: the last logged loss, between logging steps too
            assert bar == pytest.approx(losses[last_logged], rel=1e-5), (index, watch.seen)
            assert callback == pytest.approx(losses[last_logged], rel=1e-5)
