"""The recipe switches as config keys: bad values fail up front with one short message; all
of them together compose and train a real run whose checkpoint serves prediction."""

from __future__ import annotations

import pytest
import torch

from autotimm.app.config_nodes import validate_groups
from autotimm.checks import ConfigValueError

# id -> (overrides, fragments of the message: the key=value and what is accepted)
BAD_RECIPES = {
    "ema": (["model.ema_decay=1.5"], ["model.ema_decay=1.5", "(0, 1)"]),
    "freeze-epochs": (
        ["model.freeze_backbone_epochs=-1"],
        ["model.freeze_backbone_epochs=-1", "integer >= 0"],
    ),
    "layer-decay": (["optimizer.layer_decay=2"], ["optimizer.layer_decay=2", "(0, 1]"]),
    "backbone-lr-scale": (
        ["optimizer.backbone_lr_scale=0"],
        ["optimizer.backbone_lr_scale=0", "must be > 0"],
    ),
    "mixup-mode": (
        ["regularization.mixup_mode=pairs"],
        ["regularization.mixup_mode='pairs'", "['batch', 'pair', 'elem']"],
    ),
    "mixup-prob": (["regularization.mixup_prob=2"], ["regularization.mixup_prob=2", "[0, 1]"]),
    "mixup-off-epoch": (
        ["regularization.mixup_off_epoch=-2"],
        ["regularization.mixup_off_epoch=-2", "integer >= 0"],
    ),
    "sampler": (["data.sampler=weighted"], ["data.sampler='weighted'", "[None, 'balanced']"]),
    "class-weights": (
        ["data.class_weights=inverse"],
        ["data.class_weights='inverse'", "null, auto or a list"],
    ),
    "class-weights-with-mixup": (
        ["data.class_weights=auto", "regularization.mixup_alpha=0.2"],
        ["class_weights='auto'", "mixup", "data.sampler=balanced"],
    ),
    "unfreezing-under-ddp": (
        ["model.freeze_backbone_epochs=1", "backbone.checkpoint_path=/w.pth", "trainer=ddp"],
        ["trainer.strategy='ddp'", "trainer.strategy=ddp_find_unused_parameters_true"],
    ),
    "grad-checkpointing": (
        ["backbone.grad_checkpointing=maybe"],
        ["backbone.grad_checkpointing='maybe'", "true, false"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_value_fails_up_front(compose, case):
    overrides, expected = BAD_RECIPES[case]
    with pytest.raises(ConfigValueError) as info:
        validate_groups(compose(overrides))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


def test_recipes_are_off_by_default(compose):
    cfg = compose([])
    assert cfg.model.ema_decay is None and cfg.model.freeze_backbone_epochs == 0
    assert cfg.optimizer.layer_decay is None and cfg.regularization.mixup_off_epoch is None
    assert cfg.data.sampler is None and cfg.data.class_weights is None
    assert cfg.backbone.grad_checkpointing is False


def test_finetune_preset_needs_its_weights(compose):
    with pytest.raises(ConfigValueError, match="backbone.checkpoint_path=<file>"):
        validate_groups(compose(["experiment=finetune"]))
    validate_groups(compose(["experiment=finetune", "backbone.checkpoint_path=/weights.pth"]))


def test_every_recipe_together_trains_and_predicts_with_the_ema_weights(run_app, tmp_path):
    """One run with all switches on (fine-tuning from a timm state dict file); the best
    checkpoint holds the EMA weights that prediction (and export, which loads the same
    way) uses."""
    import timm

    from autotimm.inference.checkpoint import load_trained, run_checkpoint
    from autotimm.model.ema import RAW_KEY

    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=7).state_dict(), weights)

    app = run_app(
        "print_config=false", "callbacks=quiet", "logger=csv", "measure_cost=false",
        "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
        "trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
        "data.limit=200", "data.batch_size=16", "backbone.model_name=test_resnet",
        f"backbone.checkpoint_path={weights}",
        "backbone.grad_checkpointing=true", "model.ema_decay=0.9",
        "model.freeze_backbone_epochs=1", "optimizer.layer_decay=0.75",
        "regularization.mixup_alpha=0.2", "regularization.mixup_off_epoch=1",
        "regularization.mixup_mode=pair", "data.sampler=balanced",
    )  # fmt: skip
    assert app.code == 0, app.output[-3000:]
    assert app.results()["status"] == "completed"
    checkpoint_path = run_checkpoint(app.run_dir)
    saved = torch.load(checkpoint_path, weights_only=True)
    trained = load_trained(app.run_dir)
    state = trained.model.state_dict()
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in saved[RAW_KEY])
    assert any(
        not torch.equal(state[k], raw)
        for k, raw in saved[RAW_KEY].items()
        if raw.is_floating_point()
    )
    assert trained.model.backbone.grad_checkpointing is True


def test_class_weights_auto_are_printed(run_app):
    app = run_app(
        "print_config=false", "callbacks=quiet", "logger=csv", "measure_cost=false", "test=false",
        "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
        "data.limit=100", "data.batch_size=16", "backbone.model_name=test_resnet",
        "data.class_weights=auto",
    )  # fmt: skip
    assert app.code == 0, app.output[-3000:]
    assert "class weights: 0:" in app.output


def test_a_checkpoint_of_another_backbone_is_refused(tmp_path):
    """An autotimm checkpoint's backbone loads into the same model only: a short error."""
    from helpers_library import build

    from autotimm import BackboneConfig
    from autotimm.model.backbone import create_backbone

    path = tmp_path / "resnet.ckpt"
    trained = build(backbone="test_resnet")
    torch.save({"state_dict": trained.state_dict()}, path)
    loaded = create_backbone(BackboneConfig("test_resnet", checkpoint_path=str(path)))
    assert all(
        torch.equal(v, trained.backbone.state_dict()[k]) for k, v in loaded.state_dict().items()
    )
    with pytest.raises(ValueError, match="do not fit 'test_vit'"):
        create_backbone(BackboneConfig("test_vit", checkpoint_path=str(path)))
