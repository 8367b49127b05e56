"""Training recipes through short real fits on digits: EMA, layer-wise lr decay, the mixup
schedule, staged unfreezing, class weights, the balanced sampler, gradient checkpointing."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_library import (  # noqa: F401  (_one_torch_thread is an autouse fixture)
    _one_torch_thread,
    digits_loader,
    make_trainer,
    train_val_loaders,
)
from helpers_library import build as build_classifier

from autotimm.model.ema import RAW_KEY
from autotimm.optim.factory import create_optimizer


def build(**overrides: Any) -> Any:
    """timm's smallest resnet (the recipes are the subject, not the model)."""
    return build_classifier(**{"backbone": "test_resnet", **overrides})


def _backbone_state(model) -> dict[str, torch.Tensor]:
    return {f"backbone.{k}": v.detach().clone() for k, v in model.backbone.state_dict().items()}


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# ------------------------------------------------------------------ layer-wise lr decay
@pytest.mark.parametrize("backbone", ["test_vit", "test_convnext"])
def test_layer_decay_lr_decreases_towards_the_stem(backbone):
    model = build(backbone=backbone)
    optimizer = create_optimizer(model, "adamw", 1e-3, 0.05, layer_decay=0.75)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert sorted(lr_of) == sorted(id(p) for p in names.values())  # each parameter once
    head = lr_of[id(names["head.fc.weight"])]
    stem_name = next(n for n in names if "patch_embed" in n or "stem" in n)
    stem = lr_of[id(names[stem_name])]
    assert head == pytest.approx(1e-3)
    assert stem < head
    # the lr of each block is no smaller than the one before it, and grows somewhere
    depth = [lr_of[id(p)] for n, p in names.items() if n.startswith("backbone.")]
    assert all(a <= b + 1e-12 for a, b in zip(depth, depth[1:], strict=False))
    assert len({round(v, 12) for v in depth}) >= 3
    assert all("lr_scale" not in g for g in optimizer.param_groups)  # folded into lr


def test_layer_decay_keeps_its_ratios_under_the_schedule():
    """torch's cosine scheduler scales every group from its own lr."""
    model = build(backbone="test_vit", layer_decay=0.5, scheduler="cosine")
    trainer = make_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(model, digits_loader(0, 48, 16))
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    initial = [g["initial_lr"] for g in trainer.optimizers[0].param_groups]
    assert max(initial) / min(initial) > 4  # several layers, 0.5 apart
    ratios = [lr / i for lr, i in zip(lrs, initial, strict=True)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] < 1


# ------------------------------------------------------------------ EMA
class _WeightsAtTrainStart(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.state = _backbone_state(pl_module)


def _val_loss(model, loader) -> float:
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in loader]
    return float(sum(losses) / len(loader.dataset))


def test_ema_weights_are_validated_checkpointed_and_restored(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = build(ema_decay=0.9, lr=3e-3)
    train, val = train_val_loaders(64, 32, 16)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=4, limit_val_batches=2, callbacks=[checkpoint],
        enable_checkpointing=True,
    )  # fmt: skip
    trainer.fit(model, train, val)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    ema, raw = saved["state_dict"], saved[RAW_KEY]
    assert _differs({k: ema[k] for k in raw}, raw)  # the average is not the raw weights
    # after fit the model holds the EMA weights; validation ran on them
    now = _backbone_state(model)
    assert all(torch.equal(now[k], ema[k]) for k in now)
    logged = float(trainer.callback_metrics["val/loss"])
    assert _val_loss(model, val) == pytest.approx(logged, rel=1e-4)
    # testing the checkpoint evaluates the EMA weights
    (tested,) = trainer.test(model, val, ckpt_path=tmp_path / "last.ckpt", verbose=False)
    now = _backbone_state(model)
    assert all(torch.equal(now[k], ema[k]) for k in now)
    assert _val_loss(model, val) == pytest.approx(tested["test/loss"], rel=1e-4)
    # resuming trains on from the raw weights, the average carried on
    recorder = _WeightsAtTrainStart()
    again = make_trainer(
        max_epochs=2, limit_train_batches=1, limit_val_batches=0, callbacks=[recorder]
    )
    again.fit(build(ema_decay=0.9, lr=3e-3), train, ckpt_path=tmp_path / "last.ckpt")
    assert all(torch.equal(recorder.state[k], raw[k]) for k in recorder.state)
    ema_callback = next(c for c in again.callbacks if type(c).__name__ == "EmaWeights")
    assert ema_callback.ema is not None and ema_callback._last_step >= 4


# ------------------------------------------------------------------ mixup schedule
class _LossOnPlainTargets(L.Callback):
    """Per epoch: did the step's loss equal cross-entropy on the plain labels?"""

    def __init__(self) -> None:
        self.plain: dict[int, list[bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = batch

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        images, target = self.batch
        with torch.no_grad():  # same weights as the step; BatchNorm in train mode as there
            plain = F.cross_entropy(pl_module(images), target)
        same = torch.allclose(loss.detach(), plain, atol=1e-5)
        self.plain.setdefault(trainer.current_epoch, []).append(bool(same))


def test_mixup_stops_at_mixup_off_epoch():
    model = build(mixup_alpha=1.0, mixup_off_epoch=1, mixup_mode="elem", mixup_prob=1.0)
    assert model.mixer.mixup.mode == "elem"
    recorder = _LossOnPlainTargets()
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[recorder]
    )
    trainer.fit(model, digits_loader(0, 48, 16, shuffle=True))
    assert not any(recorder.plain[0])  # mixed targets in epoch 0
    assert all(recorder.plain[1])  # plain targets from epoch 1


# ------------------------------------------------------------------ staged unfreezing
class _BackboneAtEpochStart(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool, dict[str, torch.Tensor]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx:  # the first batch: after every callback's epoch start
            return
        backbone = pl_module.backbone
        grads = all(p.requires_grad for p in backbone.parameters())
        self.seen.append((grads, backbone.training, _backbone_state(pl_module)))


def test_backbone_trains_from_freeze_backbone_epochs():
    model = build(freeze_backbone_epochs=1, backbone_lr_scale=0.1, lr=2e-3)
    recorder = _BackboneAtEpochStart()
    trainer = make_trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=0, callbacks=[recorder]
    )
    trainer.fit(model, digits_loader(0, 32, 16))
    (grad0, train0, w0), (grad1, train1, w1), (_, _, w2) = recorder.seen
    assert (grad0, train0) == (False, False)  # frozen, BatchNorm statistics kept
    assert (grad1, train1) == (True, True)
    assert not _differs(w0, w1)  # epoch 0 left the backbone (and its BN buffers) alone
    assert _differs(w1, w2)
    head = {id(p) for p in model.head.parameters()}
    lrs = {("head" if id(g["params"][0]) in head else "backbone"): g["initial_lr"]
           for g in trainer.optimizers[0].param_groups}  # fmt: skip
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"])


# ------------------------------------------------------------------ class imbalance
def test_class_weights_reach_the_loss(compose):
    from hydra.utils import instantiate

    from autotimm.app.compose import build_model
    from autotimm.data.datasets import targets_of

    cfg = compose(["data.class_weights=auto", "backbone.model_name=test_resnet", "data.limit=300"])
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule)
    counts = np.bincount(targets_of(datamodule.train_dataset), minlength=10)
    expected = counts.sum() / (10 * counts)
    assert model.criterion.weight.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    # the weighted loss is what the model computes: a heavier class counts more
    logits, target = torch.zeros(2, 10), torch.tensor([0, 1])
    logits[0, 0] = -5.0  # a wrong guess on class 0 only
    weighted = model.criterion(logits, target)
    manual = F.cross_entropy(logits, target, weight=torch.tensor(expected, dtype=torch.float32))
    assert float(weighted) == pytest.approx(float(manual))


def test_balanced_sampler_draws_classes_evenly():
    from autotimm.data.imbalance import loader_order

    class Imbalanced(torch.utils.data.Dataset):
        targets = np.array([0] * 900 + [1] * 90 + [2] * 10)

    order = loader_order("balanced", Imbalanced(), train=True)
    torch.manual_seed(0)
    drawn = Imbalanced.targets[list(order["sampler"])]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.05), shares
    assert loader_order("balanced", Imbalanced(), train=False) == {"shuffle": False}


# ------------------------------------------------------------------ gradient checkpointing
def test_grad_checkpointing_is_set_on_the_backbone():
    from autotimm import BackboneConfig

    model = build(backbone=BackboneConfig("test_vit", grad_checkpointing=True))
    assert model.backbone.grad_checkpointing is True
    assert build(backbone="test_vit").backbone.grad_checkpointing is False
    images = torch.randn(2, 3, 160, 160)
    model(images).sum().backward()  # backward through the checkpointed blocks
    assert model.backbone.patch_embed.proj.weight.grad is not None
