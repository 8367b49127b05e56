"""Optimizers and schedulers through short real Trainer.fit runs on digits."""

from __future__ import annotations

import math
from typing import Any

import pytest
import timm.optim
import torch
from helpers_library import (  # noqa: F401  (_one_torch_thread is an autouse fixture)
    LrRecorder,
    _one_torch_thread,
    digits_loader,
    make_trainer,
    train_val_loaders,
)
from helpers_library import build as build_classifier

from autotimm import list_optimizers, list_schedulers
from autotimm.optim.factory import create_optimizer

LR = 1e-3
WD = 0.05


def build(**overrides: Any) -> Any:
    """helpers_library.build on timm's smallest resnet (the optimizers and schedulers are
    the subject here, not the model): a fraction of resnet18's time per step."""
    return build_classifier(**{"backbone": "test_resnet", **overrides})


# name -> (expected class, one optimizer_kwargs entry that the param groups must carry)
OPTIMIZER_CASES = {
    "adamw": (torch.optim.AdamW, {"betas": (0.8, 0.95)}),
    "adam": (torch.optim.Adam, {"eps": 1e-6}),
    "sgd": (torch.optim.SGD, {"momentum": 0.7}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.8}),
    "adagrad": (torch.optim.Adagrad, {"lr_decay": 0.01}),
    "adamp": (timm.optim.AdamP, {"delta": 0.2}),
    "sgdp": (timm.optim.SGDP, {"momentum": 0.6}),
    "adabelief": (timm.optim.AdaBelief, {"eps": 1e-12}),
    "radam": (torch.optim.RAdam, {"betas": (0.85, 0.99)}),
    "lamb": (timm.optim.Lamb, {"betas": (0.85, 0.99)}),
    "lars": (timm.optim.Lars, {"momentum": 0.8}),
    "madgrad": (timm.optim.MADGRAD, {"momentum": 0.8}),
    "novograd": (timm.optim.NvNovoGrad, {"betas": (0.9, 0.95)}),
}
SPEC_OPTIMIZERS = list(OPTIMIZER_CASES)
SPEC_SCHEDULERS = [
    "cosine",
    "step",
    "multistep",
    "exponential",
    "onecycle",
    "plateau",
    "cosine_with_restarts",
    "none",
]


def _fit(model, epochs: int = 1, batches: int = 2, val: bool = False, batch_size: int = 8):
    recorder = LrRecorder()
    train = digits_loader(0, batches * batch_size, batch_size)
    val_loader = digits_loader(1000, 2 * batch_size, batch_size) if val else None
    trainer = make_trainer(
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=2 if val else 0,
        callbacks=[recorder],
    )
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(model, train, val_loader)
    return trainer, recorder, params_before


def _check_param_groups(model, optimizer, weight_decay: float) -> None:
    """Every trainable parameter exactly once; decay on >=2-d weights only."""
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    seen: list[int] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.append(id(p))
            name = trainable.get(id(p))
            assert name is not None, "a frozen or foreign parameter reached the optimizer"
            expected = 0.0 if p.ndim <= 1 else weight_decay
            assert group["weight_decay"] == pytest.approx(expected), name
    assert sorted(seen) == sorted(trainable), "each trainable parameter exactly once"
    decayed = [p for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p.ndim > 1 for p in decayed)


def test_list_optimizers_is_the_spec_list():
    assert sorted(list_optimizers()) == sorted(SPEC_OPTIMIZERS)


def test_list_schedulers_is_the_spec_list():
    assert sorted(list_schedulers()) == sorted(SPEC_SCHEDULERS)


@pytest.mark.parametrize("name", SPEC_OPTIMIZERS)
def test_optimizer_by_name_trains(name):
    expected_cls, extra = OPTIMIZER_CASES[name]
    model = build(optimizer=name, lr=LR, weight_decay=WD, optimizer_kwargs=extra, scheduler="none")
    trainer, recorder, before = _fit(model)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is expected_cls
    _check_param_groups(model, optimizer, WD)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(LR)
        for key, value in extra.items():
            assert group[key] == pytest.approx(value), key
    assert recorder.step_lrs == [pytest.approx(LR)] * 2
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "head.fc.weight" in changed and "backbone.conv1.0.weight" in changed


def test_custom_optimizer_dict_trains():
    model = build(
        optimizer={"class": "torch.optim.AdamW", "params": {"betas": (0.7, 0.9)}},
        optimizer_kwargs={"eps": 1e-5},
        lr=2e-3,
        weight_decay=WD,
        scheduler="none",
    )
    trainer, _, before = _fit(model)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is torch.optim.AdamW
    _check_param_groups(model, optimizer, WD)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(2e-3)
        assert tuple(group["betas"]) == (0.7, 0.9)
        assert group["eps"] == 1e-5
    assert not torch.equal(model.head.fc.weight, before["head.fc.weight"])


def test_frozen_parameters_never_reach_the_optimizer():
    model = build(freeze_backbone=True, weight_decay=WD, scheduler="none")
    optimizer = create_optimizer(model, "lamb", LR, WD)
    ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert ids == {id(p) for p in model.head.parameters()}


def test_vit_no_weight_decay_names_are_honoured():
    """timm's no_weight_decay() (pos_embed, cls_token) must survive the backbone prefix."""
    model = build(
        backbone={"model_name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}},
        scheduler="none",
    )
    optimizer = create_optimizer(model, "adamw", LR, WD)
    no_decay = {
        id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    assert id(model.backbone.pos_embed) in no_decay
    assert id(model.backbone.cls_token) in no_decay
    assert id(model.backbone.patch_embed.proj.weight) not in no_decay


def test_fused_is_never_used_on_cpu():
    model = build(scheduler="none")
    optimizer = create_optimizer(model, "adamw", LR, WD, allow_fused=True)
    assert not optimizer.defaults.get("fused")


@pytest.mark.parametrize(
    ("clip", "precision", "allowed"),
    [
        (None, "bf16-mixed", True),
        (0, "32-true", True),
        (1.0, "32-true", False),
        (None, "16-mixed", False),
    ],
)
def test_fused_only_when_lightning_can_drive_it(clip, precision, allowed):
    """Fused optimizers unscale inside step(): Lightning forbids clipping and fp16 scaling."""
    from types import SimpleNamespace

    model = build(scheduler="none")
    model._trainer = SimpleNamespace(gradient_clip_val=clip, precision=precision)
    assert model._fused_allowed() is allowed


# ---------------------------------------------------------------- schedulers


@pytest.mark.parametrize("batches", [1, 3])
def test_step_scheduler_steps_per_epoch(batches):
    model = build(lr=LR, scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5})
    trainer, rec, _ = _fit(model, epochs=3, batches=batches)
    assert rec.epoch_lrs == pytest.approx([LR, LR * 0.5, LR * 0.25])
    assert rec.step_lrs == pytest.approx([LR * 0.5**e for e in range(3) for _ in range(batches)])
    assert rec.final_lr == pytest.approx(LR * 0.5**3)


def test_multistep_scheduler_milestones_in_epochs():
    model = build(
        lr=LR, scheduler="multistep", scheduler_kwargs={"milestones": [1, 2], "gamma": 0.1}
    )
    _, rec, _ = _fit(model, epochs=3, batches=2)
    assert rec.epoch_lrs == pytest.approx([LR, LR * 0.1, LR * 0.01])


def test_exponential_scheduler_steps_per_epoch():
    model = build(lr=LR, scheduler="exponential", scheduler_kwargs={"gamma": 0.5})
    _, rec, _ = _fit(model, epochs=3, batches=3)
    assert rec.epoch_lrs == pytest.approx([LR, LR * 0.5, LR * 0.25])


def test_cosine_takes_total_steps_from_trainer():
    model = build(lr=LR, scheduler="cosine")
    trainer, rec, _ = _fit(model, epochs=2, batches=3)
    total = 6
    expected = [LR * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    assert rec.step_lrs == pytest.approx(expected)
    assert rec.final_lr == pytest.approx(0.0, abs=1e-12)
    assert trainer.lr_scheduler_configs[0].interval == "step"


def test_cosine_length_follows_max_steps():
    model = build(lr=LR, scheduler="cosine")
    recorder = LrRecorder()
    trainer = make_trainer(
        max_epochs=5, max_steps=3, limit_train_batches=2, limit_val_batches=0, callbacks=[recorder]
    )
    trainer.fit(model, digits_loader(0, 16, 8))
    expected = [LR * 0.5 * (1 + math.cos(math.pi * t / 3)) for t in range(3)]
    assert recorder.step_lrs == pytest.approx(expected)
    assert recorder.final_lr == pytest.approx(0.0, abs=1e-12)


def test_cosine_scheduler_kwargs_honoured():
    model = build(lr=LR, scheduler="cosine", scheduler_kwargs={"eta_min": 1e-4})
    _, rec, _ = _fit(model, epochs=1, batches=4)
    assert rec.final_lr == pytest.approx(1e-4)
    assert min(rec.step_lrs) > 1e-4


def test_cosine_linear_warmup():
    model = build(lr=LR, scheduler="cosine", scheduler_kwargs={"warmup_epochs": 1})
    _, rec, _ = _fit(model, epochs=3, batches=2)
    lrs = rec.step_lrs
    assert len(lrs) == 6
    # warm-up: 2 steps rising linearly from 1% of lr, then the cosine over the 4 left
    assert lrs[0] == pytest.approx(0.01 * LR)
    assert lrs[1] == pytest.approx(0.505 * LR)
    main = [LR * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert lrs[2:] == pytest.approx(main)
    assert rec.final_lr == pytest.approx(0.0, abs=1e-12)


def test_step_scheduler_with_warmup_epochs():
    model = build(
        lr=LR, scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5, "warmup_epochs": 1}
    )
    _, rec, _ = _fit(model, epochs=3, batches=1)
    assert rec.epoch_lrs == pytest.approx([0.01 * LR, LR, 0.5 * LR])


def test_onecycle_takes_total_steps_from_trainer():
    model = build(lr=LR, scheduler="onecycle", scheduler_kwargs={"max_lr": 1e-2})
    trainer, rec, _ = _fit(model, epochs=2, batches=4)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 8 == trainer.estimated_stepping_batches
    assert rec.step_lrs[0] == pytest.approx(1e-2 / 25)  # default div_factor
    assert max(rec.step_lrs) <= 1e-2 + 1e-12
    assert max(rec.step_lrs) > 0.8e-2
    # the last optimizer step runs at the annealed minimum: max_lr / 25 / 1e4
    assert rec.step_lrs[-1] == pytest.approx(1e-2 / 25 / 1e4)


def test_plateau_monitors_val_loss():
    from helpers_library import column, read_metrics_csv
    from lightning.pytorch.loggers import CSVLogger

    model = build(
        lr=LR,
        scheduler="plateau",
        scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 0.0},
    )
    recorder = LrRecorder()
    train, val = train_val_loaders(train_count=16, val_count=16, batch_size=8)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        logger = CSVLogger(tmp, name="plateau")
        trainer = make_trainer(
            max_epochs=4,
            limit_train_batches=2,
            limit_val_batches=2,
            callbacks=[recorder],
            logger=logger,
        )
        trainer.fit(model, train, val)
        val_losses = column(read_metrics_csv(f"{logger.log_dir}/metrics.csv"), "val/loss")
    config = trainer.lr_scheduler_configs[0]
    assert config.monitor == "val/loss" and config.interval == "epoch"
    scheduler = config.scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.mode == "min"
    assert scheduler.best == pytest.approx(min(val_losses), rel=1e-6)
    # replay ReduceLROnPlateau(patience=0, threshold=0) on the logged val/loss
    lr, best, expected = LR, math.inf, [LR]
    for loss in val_losses:
        if loss < best:
            best = loss
        else:
            lr *= 0.5
        expected.append(lr)
    assert recorder.epoch_lrs == pytest.approx(expected[: len(recorder.epoch_lrs)], rel=1e-5)
    assert recorder.final_lr == pytest.approx(expected[-1], rel=1e-5)


def test_plateau_accepts_a_user_monitor():
    from helpers_library import accuracy_metrics

    model = build(
        metrics=accuracy_metrics(["val"]),
        scheduler="plateau",
        scheduler_kwargs={"monitor": "val/accuracy", "patience": 0},
    )
    trainer, _, _ = _fit(model, epochs=2, batches=1, val=True)
    config = trainer.lr_scheduler_configs[0]
    assert config.monitor == "val/accuracy"
    assert config.scheduler.mode == "max"  # inferred: accuracy goes up


def test_cosine_with_restarts_restarts():
    from timm.scheduler import CosineLRScheduler

    model = build(lr=LR, scheduler="cosine_with_restarts", scheduler_kwargs={"t_initial": 1})
    trainer, rec, _ = _fit(model, epochs=4, batches=2)
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, CosineLRScheduler)
    # cycles of t_initial=1 epoch = 2 steps: lr0, cos(pi/2) midpoint, restart to lr0 ...
    expected = [LR * 0.5 * (1 + math.cos(math.pi * (t % 2) / 2)) for t in range(8)]
    assert rec.step_lrs == pytest.approx(expected)
    rises = sum(1 for a, b in zip(rec.step_lrs, rec.step_lrs[1:], strict=False) if b > a)
    assert rises == 3


def test_scheduler_none_keeps_lr_constant():
    model = build(lr=LR, scheduler="none")
    trainer, rec, _ = _fit(model, epochs=2, batches=2)
    assert trainer.lr_scheduler_configs == []
    assert rec.step_lrs == [pytest.approx(LR)] * 4
    model = build(lr=LR, scheduler=None)
    trainer, rec, _ = _fit(model, epochs=1, batches=2)
    assert trainer.lr_scheduler_configs == []


def test_custom_scheduler_dict():
    model = build(
        lr=LR,
        scheduler={
            "class": "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
            "params": {"T_0": 2},
        },
        scheduler_kwargs={"eta_min": 1e-4},
    )
    trainer, rec, _ = _fit(model, epochs=3, batches=2)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    mid = 1e-4 + (LR - 1e-4) * 0.5
    assert rec.epoch_lrs == pytest.approx([LR, mid, LR])  # stepped per epoch, restarts


def test_scheduler_kwargs_rejected_at_construction():
    with pytest.raises(ValueError, match="bogus"):
        build(scheduler="step", scheduler_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match="warmup_epochs"):
        build(scheduler="plateau", scheduler_kwargs={"warmup_epochs": 1})


def test_optimizer_kwargs_rejected_at_construction():
    with pytest.raises(ValueError, match="bogus"):
        build(optimizer="adamw", optimizer_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match="lr"):
        build(optimizer={"class": "torch.optim.SGD", "params": {"lr": 0.1}})
