"""ImageClassifier behaviour: freezing, regularization, prediction, checkpoints, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_library import (  # noqa: F401
    NUM_CLASSES,
    _one_torch_thread,
    accuracy_metrics,
    build,
    digits_loader,
    make_trainer,
    one_batch,
)

from autotimm import BackboneConfig, ClassificationHead, ImageClassifier, MetricConfig

# ---------------------------------------------------------------- freezing


class _ModeSpy(L.Callback):
    def __init__(self) -> None:
        self.backbone_training: list[bool] = []
        self.head_training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.backbone_training.append(any(m.training for m in pl_module.backbone.modules()))
        self.head_training.append(pl_module.head.training)


def test_freeze_backbone_linear_probing():
    model = build(freeze_backbone=True, lr=1e-2, scheduler="none", head_dropout=0.2)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    model.train()  # what the trainer does; the backbone must stay in eval mode
    assert not any(m.training for m in model.backbone.modules())
    assert model.head.training

    spy = _ModeSpy()
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1, callbacks=[spy])
    trainer.fit(model, digits_loader(0, 16, 8), digits_loader(1000, 8, 8))

    assert spy.backbone_training == [False, False]
    assert spy.head_training == [True, True]
    after = model.backbone.state_dict()
    # weights and BatchNorm running stats (running_mean/var, num_batches_tracked) unchanged
    assert any("running_mean" in k for k in after)
    assert all(torch.equal(after[k], backbone_before[k]) for k in after)
    assert not torch.equal(model.head.fc.weight, head_before["fc.weight"])
    assert not torch.equal(model.head.fc.bias, head_before["fc.bias"])
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.head.parameters()}
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_unfrozen_backbone_does_train():
    model = build(scheduler="none")
    before = model.backbone.conv1.weight.detach().clone()
    make_trainer(limit_train_batches=1).fit(model, digits_loader(0, 8, 8))
    assert not torch.equal(model.backbone.conv1.weight, before)
    assert model.backbone.training


# ---------------------------------------------------------------- regularization


def _capture_mixer(model):
    """Wrap model.mixer to keep what it returned."""
    seen = {}
    original = model.mixer

    def spy(images, target):
        mixed, soft = original(images, target)
        seen.update(mixed=mixed, soft=soft)
        return mixed, soft

    model.mixer = spy
    return seen


def _lam_from_mix(images: torch.Tensor, mixed: torch.Tensor) -> float:
    """Solve mixed = lam * x + (1 - lam) * x.flip(0) for lam (least squares)."""
    flipped = images.flip(0)
    diff = images - flipped
    return float(((mixed - flipped) * diff).sum() / (diff * diff).sum())


def _confident(model):
    """Spread the logits of a fresh model so that losses can differ.

    Train mode: BatchNorm uses batch statistics (deterministic for a given batch), so
    per-image features differ; an untrained model in eval mode gives near-identical rows.
    """
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.fc.weight, std=0.5)
    return model.train()


def _smooth(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.one_hot(target, NUM_CLASSES).double() * (1 - smoothing) + smoothing / NUM_CLASSES


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_inputs_and_targets(smoothing):
    np.random.seed(0)  # timm's Mixup draws lam with numpy
    model = _confident(build(mixup_alpha=0.4, label_smoothing=smoothing))
    images, target = one_batch(8)
    original = images.clone()
    seen = _capture_mixer(model)
    loss = model.training_step((images, target), 0)

    assert torch.equal(images, original), "the caller's batch must not be mixed in place"
    lam = _lam_from_mix(images, seen["mixed"])
    assert 0.0 < lam < 1.0 and abs(lam - 0.5) < 0.49
    assert torch.allclose(seen["mixed"], lam * images + (1 - lam) * images.flip(0), atol=1e-5)
    # soft targets: lam of each sample's (smoothed) label, 1 - lam of its partner's
    expected = lam * _smooth(target, smoothing) + (1 - lam) * _smooth(target.flip(0), smoothing)
    assert torch.allclose(seen["soft"].double(), expected, atol=1e-5)
    assert seen["soft"].max() < 1.0  # genuinely soft
    # smoothing is inside the soft targets only, not applied a second time by the loss
    with torch.no_grad():
        logits = model(seen["mixed"])
    expected_loss = -(expected * F.log_softmax(logits.double(), -1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    plain = F.cross_entropy(model(images), target, label_smoothing=smoothing)
    assert abs(loss.item() - plain.item()) > 0.05


def test_cutmix_pastes_a_box_and_weights_targets_by_area():
    np.random.seed(0)
    model = build(cutmix_alpha=1.0).train()
    # image i is the constant i, so every pixel tells where it came from
    images = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 32, 32).contiguous()
    target = torch.arange(8)
    seen = _capture_mixer(model)
    model.training_step((images, target), 0)
    mixed = seen["mixed"]
    from_partner = mixed == images.flip(0)
    assert torch.all(from_partner | (mixed == images))
    box = from_partner[0, 0]  # (H, W); the same box for every image and channel
    assert torch.all(from_partner == box)
    lam = 1.0 - box.float().mean().item()
    assert 0.05 < lam < 0.95
    expected = lam * _smooth(target, 0.0) + (1 - lam) * _smooth(target.flip(0), 0.0)
    assert torch.allclose(seen["soft"].double(), expected, atol=1e-6)


def test_mixup_odd_batch_is_smoothed_but_not_mixed():
    model = build(mixup_alpha=0.4, label_smoothing=0.1).eval()
    images, target = one_batch(7)
    seen = _capture_mixer(model)
    loss = model.training_step((images, target), 0)
    assert torch.equal(seen["mixed"], images)
    with torch.no_grad():
        expected = F.cross_entropy(model(images), target, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixup_only_in_training():
    model = build(mixup_alpha=1.0).eval()
    images, target = one_batch(8)
    with torch.no_grad():
        loss = model.validation_step((images, target), 0)
        expected = F.cross_entropy(model(images), target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_matches_torch():
    model = _confident(build(label_smoothing=0.2))
    images, target = one_batch(8)
    loss = model.training_step((images, target), 0)
    with torch.no_grad():
        logits = model(images)
    smoothed = F.cross_entropy(logits, target, label_smoothing=0.2)
    assert loss.item() == pytest.approx(smoothed.item(), rel=1e-6)
    assert abs(loss.item() - F.cross_entropy(logits, target).item()) > 0.05


def test_head_dropout_is_active_in_training_only():
    head = ClassificationHead(16, 3, dropout=0.5)
    features = torch.ones(64, 16)
    head.train()
    assert not torch.equal(head(features), head(features))
    head.eval()
    assert torch.equal(head(features), head.fc(features))


# ---------------------------------------------------------------- prediction


def test_predict_step_returns_probabilities():
    model = build()
    loader = digits_loader(0, 20, 8)
    predictions = make_trainer().predict(model, loader)
    probs = torch.cat(predictions)
    assert probs.shape == (20, NUM_CLASSES)
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(-1), torch.ones(20), atol=1e-5)
    images, _ = one_batch(20)
    with torch.no_grad():
        expected = model.eval()(images).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-5)
    # a bare image tensor works too
    assert torch.allclose(model.predict_step(images, 0), expected, atol=1e-5)


# ---------------------------------------------------------------- checkpoints


def _assert_plain(value, where="hparams"):
    if isinstance(value, dict):
        assert type(value) is dict or type(value).__name__ == "AttributeDict", where
        for k, v in value.items():
            assert isinstance(k, str), where
            _assert_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _assert_plain(v, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), (where, value)


def test_checkpoint_round_trip_offline(tmp_path):
    import timm

    weights = tmp_path / "weights.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    config = BackboneConfig(
        model_name="resnet18", pretrained=True, checkpoint_path=str(weights), drop_path_rate=0.1
    )
    model = build(
        backbone=config,
        metrics=accuracy_metrics(),
        optimizer_kwargs={"betas": (0.9, 0.99)},
        class_names=[str(i) for i in range(NUM_CLASSES)],
        head_dropout=0.1,
    )
    assert model.hparams_initial["backbone"]["pretrained"] is True  # loggers see the truth
    trainer = make_trainer(
        default_root_dir=tmp_path, enable_checkpointing=True, limit_train_batches=2
    )
    trainer.fit(model, digits_loader(0, 16, 8), digits_loader(1000, 8, 8))
    ckpt = trainer.checkpoint_callback.best_model_path
    assert ckpt and Path(ckpt).is_file()
    weights.unlink()  # the rebuild must need neither this file nor the network

    restored = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    images, _ = one_batch(16, start=500)
    with torch.no_grad():
        expected = model.eval()(images)
        got = restored.eval()(images)
    assert torch.equal(got, expected)
    assert restored.hparams.backbone["drop_path_rate"] == 0.1
    assert restored.head.dropout is not None

    hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    _assert_plain(hparams)
    assert hparams["backbone"]["pretrained"] is False
    assert hparams["backbone"]["checkpoint_path"] is None
    assert hparams["metrics"][0]["metric_class"] == "Accuracy"
    assert hparams["num_classes"] == NUM_CLASSES


def test_hydra_instantiation_gives_plain_hparams():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "autotimm.ImageClassifier",
            "backbone": {
                "_target_": "autotimm.BackboneConfig",
                "model_name": "resnet18",
                "kwargs": {"global_pool": "avg"},
            },
            "num_classes": 10,
            "metrics": [
                {
                    "_target_": "autotimm.MetricConfig",
                    "name": "accuracy",
                    "metric_class": "Accuracy",
                    "params": {"task": "multiclass"},
                    "stages": ["val"],
                }
            ],
            "logging_config": {"_target_": "autotimm.LoggingConfig", "log_learning_rate": True},
            "optimizer": "sgd",
            "optimizer_kwargs": {"momentum": 0.8},
            "scheduler": "step",
            "scheduler_kwargs": {"step_size": 1},
        }
    )
    model = instantiate(cfg)
    assert isinstance(model, ImageClassifier)
    _assert_plain(dict(model.hparams))
    assert model.hparams.backbone["kwargs"] == {"global_pool": "avg"}
    assert model.logging_config.log_learning_rate is True


# ---------------------------------------------------------------- bad input

BAD_INPUTS = [
    ({"backbone": "resnet181"}, ["resnet181", "resnet18"]),
    ({"optimizer": "adamx"}, ["adamx", "adamw", "lamb"]),
    ({"scheduler": "cosinus"}, ["cosinus", "cosine", "plateau"]),
    ({"optimizer": {"params": {"lr": 1}}}, ["class"]),
    ({"optimizer": {"class": "torch.optim.NoSuchOpt"}}, ["torch.optim.NoSuchOpt"]),
    ({"scheduler": {"params": {}}}, ["class"]),
    ({"num_classes": 0}, ["num_classes", "0", ">= 1"]),
    ({"num_classes": -3}, ["num_classes", "-3"]),
    ({"label_smoothing": 1.0}, ["label_smoothing", "1.0", "[0, 1)"]),
    ({"label_smoothing": -0.1}, ["label_smoothing", "-0.1"]),
    ({"mixup_alpha": -1.0}, ["mixup_alpha", "-1.0", ">= 0"]),
    ({"head_dropout": 1.0}, ["head_dropout", "1.0", "[0, 1)"]),
    ({"head_dropout": -0.5}, ["head_dropout", "-0.5"]),
    (
        {"metrics": [{"name": "acc", "metric_class": "Acuracy"}]},
        ["Acuracy", "torchmetrics", "custom"],
    ),
    (
        {"metrics": [{"name": "acc", "metric_class": "Accuracy", "stages": ["training"]}]},
        ["training", "train", "val", "test"],
    ),
    (
        {"metrics": [{"name": "x", "metric_class": "no.such.Metric", "backend": "custom"}]},
        ["no.such.Metric"],
    ),
    ({"logging_config": {"log_everything": True}}, ["log_everything", "log_learning_rate"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_INPUTS, ids=lambda v: str(v)[:40])
def test_bad_input_raises_value_error_at_construction(overrides, expected, monkeypatch):
    import autotimm.model.classifier

    built = []
    monkeypatch.setattr(
        autotimm.model.classifier, "create_backbone", lambda cfg: built.append(cfg) or None
    )
    if "backbone" in overrides:
        monkeypatch.undo()
    with pytest.raises(ValueError) as info:
        build(**overrides)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert built == [], "validation must happen before the backbone is built"


def test_bad_metric_config_fails_directly():
    with pytest.raises(ValueError, match="'validation'"):
        MetricConfig(name="acc", metric_class="Accuracy", stages=["validation"])


# ---------------------------------------------------------------- light import


def test_import_autotimm_is_light(import_probe):
    """`import autotimm` loads none of the heavy libraries; the classes load on first use
    (answered by one fresh interpreter, conftest.IMPORT_PROBE)."""
    assert import_probe["autotimm"] == [], f"import autotimm pulled in {import_probe['autotimm']}"
    assert import_probe["model"] == ["ImageClassifier", 3]


class _StopAfter(L.Callback):
    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.batches:
            trainer.should_stop = True


def test_scheduler_needs_a_finite_run():
    model = build(scheduler="cosine")
    trainer = make_trainer(max_epochs=-1, limit_train_batches=1)
    with pytest.raises(ValueError, match="max_epochs"):
        trainer.fit(model, digits_loader(0, 8, 8))
    assert math.isinf(trainer.estimated_stepping_batches)
    # without a scheduler an open-ended run is fine
    model = build(scheduler="none")
    trainer = make_trainer(max_epochs=-1, limit_train_batches=1, callbacks=[_StopAfter(2)])
    trainer.fit(model, digits_loader(0, 8, 8))
    assert trainer.global_step == 2
