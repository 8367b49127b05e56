"""Every example of the user's API page (spec/ImageClassifier.md) runs as written.

The examples are kept verbatim below (CI has no copy of the spec); when the spec is
present, a test checks that each of its Python blocks still appears here unchanged.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
import torch
from helpers_library import _one_torch_thread  # noqa: F401

from autotimm.model.backbone import _hub_reachable

BASIC = """
from autotimm import ImageClassifier, MetricConfig

metrics = [
    MetricConfig(
        name="accuracy",
        backend="torchmetrics",
        metric_class="Accuracy",
        params={"task": "multiclass"},
        stages=["train", "val", "test"],
        prog_bar=True,
    ),
]

model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
)
"""

BACKBONE_CONFIG = """
from autotimm import BackboneConfig, ImageClassifier

cfg = BackboneConfig(
    model_name="vit_base_patch16_224",
    pretrained=True,
    drop_path_rate=0.1,
)

model = ImageClassifier(
    backbone=cfg,
    num_classes=100,
    metrics=metrics,
)
"""

ENHANCED_LOGGING = """
from autotimm import LoggingConfig

model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
    logging_config=LoggingConfig(
        log_learning_rate=True,
        log_gradient_norm=True,
        log_confusion_matrix=True,
    ),
)
"""

CUSTOM_OPTIMIZER = """
model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    optimizer_kwargs={"betas": (0.9, 0.999)},
)
"""

CUSTOM_SCHEDULER = """
model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
    scheduler="onecycle",
    scheduler_kwargs={"max_lr": 1e-2},
)
"""

FROZEN = """
model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
    freeze_backbone=True,
    lr=1e-2,
)
"""

REGULARIZATION = """
model = ImageClassifier(
    backbone="resnet50",
    num_classes=10,
    metrics=metrics,
    label_smoothing=0.1,
    mixup_alpha=0.2,
    head_dropout=0.5,
)
"""

OPTIMIZER_DICT = """
optimizer={
    "class": "torch.optim.AdamW",
    "params": {"betas": (0.9, 0.999)},
}
"""

SCHEDULER_DICT = """
scheduler={
    "class": "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
    "params": {"T_0": 10},
}
"""

ALL_EXAMPLES = [
    BASIC,
    BACKBONE_CONFIG,
    ENHANCED_LOGGING,
    CUSTOM_OPTIMIZER,
    CUSTOM_SCHEDULER,
    FROZEN,
    REGULARIZATION,
    OPTIMIZER_DICT,
    SCHEDULER_DICT,
]


def _run(code: str, namespace: dict) -> dict:
    exec(compile(textwrap.dedent(code), "<spec example>", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def basic() -> dict:
    namespace = _run(BASIC, {})
    return namespace


def _check_resnet50(model, num_classes: int = 10) -> None:
    from autotimm import ImageClassifier

    assert isinstance(model, ImageClassifier)
    assert model.hparams.backbone["model_name"] == "resnet50"
    assert model.backbone.num_features == 2048
    assert model.head.fc.out_features == num_classes
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, num_classes)


def test_basic_usage(basic):
    model = basic["model"]
    _check_resnet50(model)
    assert [type(m).__name__ for m in model.metrics.get("val").values()] == ["MulticlassAccuracy"]
    assert model.metrics.config("accuracy").prog_bar is True
    assert model.hparams.optimizer == "adamw" and model.hparams.scheduler == "cosine"


@pytest.mark.skipif(_hub_reachable(), reason="weights hub reachable: offline error not testable")
def test_with_backbone_config_offline(basic):
    namespace = dict(basic)
    with pytest.raises(RuntimeError) as info:
        _run(BACKBONE_CONFIG, namespace)
    message = str(info.value)
    assert "vit_base_patch16_224" in message
    assert "checkpoint_path" in message and "pretrained=False" in message
    assert namespace["cfg"].drop_path_rate == 0.1


def test_with_backbone_config_builds_without_download(basic, monkeypatch):
    """The same example with the download replaced: every field reaches the model."""
    import timm

    real = timm.create_model

    def no_download(name, pretrained=False, **kwargs):
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_download)
    model = _run(BACKBONE_CONFIG, dict(basic))["model"]
    assert model.head.fc.out_features == 100
    assert model.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_with_enhanced_logging(basic):
    model = _run(ENHANCED_LOGGING, dict(basic))["model"]
    _check_resnet50(model)
    assert model.logging_config.log_learning_rate
    assert model.logging_config.log_gradient_norm
    assert model.logging_config.log_confusion_matrix
    assert not model.logging_config.log_weight_norm


def test_with_custom_optimizer(basic):
    from autotimm.optim.factory import create_optimizer

    model = _run(CUSTOM_OPTIMIZER, dict(basic))["model"]
    _check_resnet50(model)
    hp = model.hparams
    optimizer = create_optimizer(model, hp.optimizer, hp.lr, hp.weight_decay, hp.optimizer_kwargs)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 1e-4}
    assert all(g["betas"] == (0.9, 0.999) and g["lr"] == 1e-3 for g in optimizer.param_groups)


def test_with_custom_scheduler(basic):
    from autotimm.optim.factory import TrainingLength, create_optimizer, create_scheduler

    model = _run(CUSTOM_SCHEDULER, dict(basic))["model"]
    _check_resnet50(model)
    optimizer = create_optimizer(model, "adamw", 1e-3, 1e-4)
    config = create_scheduler(
        model.hparams.scheduler,
        optimizer,
        TrainingLength(40, 4, 10),
        model.hparams.scheduler_kwargs,
    )
    assert isinstance(config["scheduler"], torch.optim.lr_scheduler.OneCycleLR)
    assert config["scheduler"].total_steps == 40 and config["interval"] == "step"
    assert optimizer.param_groups[0]["max_lr"] == 1e-2


def test_frozen_backbone(basic):
    model = _run(FROZEN, dict(basic))["model"]
    _check_resnet50(model)
    model.train()
    assert not model.backbone.training and model.head.training
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.fc.weight", "head.fc.bias"]
    assert model.hparams.lr == 1e-2


def test_with_regularization(basic):
    model = _run(REGULARIZATION, dict(basic))["model"]
    _check_resnet50(model)
    assert model.criterion.label_smoothing == 0.1
    assert model.head.dropout.p == 0.5
    assert model.mixer is not None and model.mixer.mixup.mixup_alpha == 0.2


def test_custom_optimizer_and_scheduler_dicts(basic):
    from autotimm import ImageClassifier

    optimizer = _run(OPTIMIZER_DICT, {})["optimizer"]
    scheduler = _run(SCHEDULER_DICT, {})["scheduler"]
    model = ImageClassifier(
        backbone="resnet18",
        num_classes=10,
        metrics=basic["metrics"],
        optimizer=optimizer,
        scheduler=scheduler,
    )
    assert model.hparams.optimizer == optimizer and model.hparams.scheduler == scheduler


def _spec_path() -> Path | None:
    candidates = [os.environ.get("AUTOTIMM_SPEC", "")]
    here = Path(__file__).resolve()
    candidates += [str(p / "shared/spec/ImageClassifier.md") for p in here.parents]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_examples_match_the_spec_page():
    spec = _spec_path()
    if spec is None:
        pytest.skip("spec/ImageClassifier.md not present in this checkout")
    blocks = re.findall(r"```python\n(.*?)```", spec.read_text(), flags=re.S)
    assert len(blocks) == len(ALL_EXAMPLES)

    def normal(code: str) -> str:
        return textwrap.dedent(code).strip()

    ours = {normal(code) for code in ALL_EXAMPLES}
    for block in blocks:
        assert normal(block) in ours, f"spec example changed or missing here:\n{block}"
