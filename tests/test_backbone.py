"""BackboneConfig fields must all reach timm.create_model; offline and bad-name errors."""

from __future__ import annotations

import pytest
import timm
import torch
from helpers_library import _one_torch_thread, build, one_batch  # noqa: F401
from timm.layers import DropPath

from autotimm import BackboneConfig, ImageClassifier, list_backbones
from autotimm.model.backbone import _hub_reachable, create_backbone


def test_string_backbone_equals_default_config():
    torch.manual_seed(0)
    from_name = build(backbone="resnet18")
    torch.manual_seed(0)
    from_config = build(backbone=BackboneConfig(model_name="resnet18"))
    assert from_name.hparams.backbone == from_config.hparams.backbone
    assert from_name.hparams.backbone == BackboneConfig(model_name="resnet18").to_dict()
    a, b = from_name.state_dict(), from_config.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_headless_backbone_and_head_architecture():
    model = build(head_dropout=0.5)
    assert model.backbone.num_features == 512
    assert model.backbone.get_classifier() is not None
    assert model.backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 512)  # pooled, no classes
    assert isinstance(model.head.dropout, torch.nn.Dropout) and model.head.dropout.p == 0.5
    assert (model.head.fc.in_features, model.head.fc.out_features) == (512, 10)
    assert isinstance(model.criterion, torch.nn.CrossEntropyLoss)
    assert build().head.dropout is None


def test_drop_path_rate_reaches_the_model():
    model = build(backbone=BackboneConfig(model_name="resnet18", drop_path_rate=0.2))
    probs = [m.drop_prob for m in model.backbone.modules() if isinstance(m, DropPath)]
    # timm scales the rate linearly over the 8 BasicBlocks; block 0 (rate 0) has none
    assert probs == pytest.approx([0.2 * i / 7 for i in range(1, 8)])
    assert not any(isinstance(m, DropPath) for m in build().backbone.modules())


def test_drop_rate_reaches_the_model():
    images, _ = one_batch(4)
    model = build(backbone=BackboneConfig(model_name="resnet18", drop_rate=0.5))
    assert model.backbone.drop_rate == 0.5
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        pooled = model.backbone.global_pool(model.backbone.forward_features(images))
        out = model.backbone(images)  # same features (BN is deterministic), then dropout
    kept = out != 0
    assert torch.allclose(out[kept], 2.0 * pooled[kept])  # inverted dropout, p=0.5
    dropped = (~kept & (pooled > 0)).float().sum() / (pooled > 0).float().sum()
    assert 0.35 < dropped.item() < 0.65
    plain = build()
    plain.train()
    assert torch.equal(plain.backbone(images), plain.backbone(images))


def test_in_chans_reaches_the_model():
    model = build(backbone=BackboneConfig(model_name="resnet18", in_chans=1))
    assert model.backbone.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_kwargs_reach_the_model():
    images, _ = one_batch(2)
    model = build(backbone=BackboneConfig(model_name="resnet18", kwargs={"global_pool": "max"}))
    model.eval()
    with torch.no_grad():
        pooled = model.backbone(images)
        expected = model.backbone.forward_features(images).amax(dim=(2, 3))
    assert torch.allclose(pooled, expected)


def test_checkpoint_path_loads_local_weights(tmp_path):
    torch.manual_seed(123)
    reference = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(0)  # a different init, so equality below comes from the file
    model = build(backbone=BackboneConfig(model_name="resnet18", checkpoint_path=str(path)))
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    loaded = model.backbone.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build(backbone=BackboneConfig(model_name="resnet18", checkpoint_path=str(missing)))


@pytest.mark.skipif(_hub_reachable(), reason="weights hub reachable: offline error not testable")
def test_pretrained_offline_error_says_what_to_do():
    with pytest.raises(RuntimeError) as info:
        create_backbone(BackboneConfig(model_name="resnet18", pretrained=True))
    message = str(info.value)
    assert "resnet18" in message and "offline" in message
    assert "checkpoint_path" in message and "pretrained=False" in message


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(ValueError) as info:
        build(backbone="resnet181")
    message = str(info.value)
    assert "'resnet181'" in message and "resnet18" in message.split("resnet181", 1)[1]
    assert "list_backbones" in message


def test_bad_backbone_config_values():
    with pytest.raises(ValueError, match="num_classes"):
        BackboneConfig(model_name="resnet18", kwargs={"num_classes": 3})
    with pytest.raises(ValueError, match="drop_rate"):
        BackboneConfig(model_name="resnet18", kwargs={"drop_rate": 0.3})
    with pytest.raises(ValueError, match="bogus"):
        build(backbone={"model_name": "resnet18", "bogus": 1})


def test_list_backbones_lists_what_works():
    names = list_backbones("resnet1*")
    assert "resnet18" in names and "resnet101" in names
    assert all(n.startswith("resnet1") for n in names)
    assert "resnet50" not in names
    for name in names:
        assert timm.is_model(name)
    model = ImageClassifier(backbone=names[0], num_classes=2, metrics=[]).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
