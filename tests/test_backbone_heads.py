"""Every backbone option of conf/backbone gets a head of the right width."""

from __future__ import annotations

import pytest
import torch

from autotimm import ImageClassifier


# mobilenetv3: 960 pooled features, 1280 after its conv_head (timm's head_hidden_size)
@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "efficientnet_b0", "resnet18"])
def test_backbone_and_head_fit_together(name):
    model = ImageClassifier(backbone=name, num_classes=3, metrics=[]).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 3)
