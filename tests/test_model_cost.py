"""autotimm.model.cost: a model's parameters, GFLOPs (2 flops per multiply-add), latency and
throughput, measured without changing the model (flags, weights, layout, compile)."""

from __future__ import annotations

import logging
import time

import pytest
import timm
import torch

from autotimm.model import cost as model_cost
from autotimm.model.cost import autocast_dtype, measure_cost
from autotimm.records.results import ModelCost

SMALL = (3, 32, 32)
QUICK = {"throughput_batch": 4, "budget_s": 0.05}


def resnet18(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10, **kwargs)


def tiny(**kwargs) -> torch.nn.Module:
    """timm's test_resnet (0.37 M parameters): the same layers as resnet18, fast."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10, **kwargs)


def test_resnet18_defaults_are_plausible_and_quick():
    model = resnet18()
    start = time.perf_counter()
    cost = measure_cost(model, SMALL, "cpu")
    took = time.perf_counter() - start
    assert cost.params_m == pytest.approx(
        sum(p.numel() for p in model.parameters()) / 1e6, abs=1e-4
    )
    assert 11.1 < cost.params_m < 11.3  # resnet18 with a 10-class head
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert cost.throughput_img_s is not None and cost.throughput_img_s > 0
    assert took < 10, f"measuring took {took:.1f} s"
    assert set(cost.to_dict()) == {"params_m", "gflops", "latency_ms", "throughput_img_s"}


def test_gflops_count_two_per_multiply_add():
    """timm publishes resnet18 at 224 px as 1.82 GMACs: 3.64 GFLOPs at 2 flops per MAC."""
    cost = measure_cost(resnet18(), (3, 224, 224), "cpu", throughput_batch=1, budget_s=0.01)
    assert cost.gflops == pytest.approx(2 * 1.82, rel=0.01)


def test_uses_the_models_own_channels():
    cost = measure_cost(tiny(in_chans=1), (1, 28, 28), "cpu", **QUICK)
    assert cost.gflops and cost.latency_ms and cost.throughput_img_s


def test_leaves_flags_and_weights_as_they_were():
    model = tiny().train()
    model.layer4.eval()  # a frozen part kept in eval mode (linear probing)
    weight = model.fc.weight.detach().clone()
    running_mean = model.bn1.running_mean.clone()
    measure_cost(model, SMALL, "cpu", **QUICK)
    assert model.training and model.bn1.training and not model.layer4.training
    assert not model.layer4[0].bn1.training
    assert torch.equal(model.fc.weight, weight)
    assert torch.equal(model.bn1.running_mean, running_mean)  # eval mode: no statistics update
    model(torch.randn(2, *SMALL)).sum().backward()  # still trainable: no inference tensors
    assert model.fc.weight.grad is not None


def test_compiled_and_channels_last_models():
    plain = measure_cost(tiny(), SMALL, "cpu", **QUICK)
    model = tiny().to(memory_format=torch.channels_last)
    model.compile(backend="eager")  # in place, like autotimm.app.compose.prepare_model
    compiled_call = model._compiled_call_impl
    # one batch size: one compile (a second size would compile again)
    cost = measure_cost(model, SMALL, "cpu", throughput_batch=1, budget_s=0.05)
    assert cost.gflops == plain.gflops and cost.latency_ms and cost.throughput_img_s
    assert model._compiled_call_impl is compiled_call  # still compiled
    assert model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_autocast_on_the_cpu():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    assert autocast_dtype("32-true") is None and autocast_dtype(32) is None
    cost = measure_cost(tiny(), SMALL, "cpu", autocast=torch.bfloat16, **QUICK)
    assert cost.gflops and cost.latency_ms and cost.throughput_img_s


def test_a_failing_flop_counter_gives_none_and_a_warning(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("counter broke")

    monkeypatch.setattr("torch.utils.flop_counter.FlopCounterMode", broken)
    with caplog.at_level(logging.WARNING, logger=model_cost.__name__):
        cost = measure_cost(tiny(), SMALL, "cpu", **QUICK)
    assert cost.gflops is None and cost.latency_ms and cost.throughput_img_s
    assert "GFLOPs not measured (RuntimeError: counter broke)" in caplog.text


def test_a_model_that_cannot_run_gives_none_not_an_error(caplog):
    cost = measure_cost(tiny(), (5, 32, 32), "cpu", **QUICK)  # 5 channels into a 3-channel stem
    assert cost == ModelCost(params_m=cost.params_m)
    assert caplog.text.count("not measured") == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_cannot_be_used_keeps_the_parameter_count(caplog):
    model = tiny()
    weight = model.fc.weight.detach().clone()
    cost = measure_cost(model, SMALL, "cuda", **QUICK)
    assert cost == ModelCost(params_m=cost.params_m) and cost.params_m > 0
    assert "not measured on cuda" in caplog.text
    assert model.fc.weight.device.type == "cpu" and torch.equal(model.fc.weight, weight)


@pytest.mark.parametrize("bad", [(32, 32), (3, 0, 32), (3, 32.0, 32), "3x32x32"])
def test_bad_input_size_names_the_value(bad):
    with pytest.raises(ValueError, match=r"input_size=.*expected 3 positive ints"):
        measure_cost(tiny(), bad, "cpu")
