"""MetricManager as the original AutoTimm's collection API, its refusals, and multi-label metrics.

Multi-label values are checked against numbers worked out by hand (in the comments) and
against sklearn on the same probabilities, computed here with numpy, not by autotimm.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_library import RecordingMetric, build  # noqa: F401
from omegaconf import OmegaConf

from autotimm import MetricConfig, MetricManager
from autotimm.checks import ConfigValueError

ROOT = Path(__file__).resolve().parents[1]


def _configs() -> list[MetricConfig]:
    return [
        MetricConfig(name="accuracy", metric_class="Accuracy", stages=["train", "val", "test"]),
        MetricConfig(
            name="f1", metric_class="F1Score", params={"average": "macro"}, stages=["val"]
        ),
        MetricConfig(name="auroc", metric_class="AUROC", stages=["val", "test"]),
    ]


def _conf_metrics(name: str) -> list[MetricConfig]:
    """A metrics set as the app builds it from conf/metrics/<name>.yaml."""
    from autotimm.app.config_nodes import metric_list

    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "metrics" / f"{name}.yaml"))
    node.pop("_target_")
    return metric_list(**node)


# ------------------------------------------------------------------ the collection


def test_manager_is_a_read_only_collection_of_its_configs():
    configs = _configs()
    manager = MetricManager(configs, num_classes=4)
    assert len(manager) == 3
    assert [c.name for c in manager] == ["accuracy", "f1", "auroc"]  # config order
    assert manager[0] is configs[0] and manager[-1] is configs[2] and manager[-3] is configs[0]
    for bad in (3, -4, 100):
        with pytest.raises(IndexError, match=f"index {bad} out of range: 3 metric configs"):
            manager[bad]
    with pytest.raises(TypeError, match="get_config_by_name"):
        manager["accuracy"]
    assert "f1" in manager and configs[1] in manager and "top5" not in manager
    manager.configs.append(configs[0])  # a copy: the manager does not change
    assert len(manager) == 3 and list(manager) == configs


def test_stage_getters_return_the_instances_the_model_updates():
    manager = MetricManager(_configs(), num_classes=4)
    train, val, test = (
        manager.get_train_metrics(),
        manager.get_val_metrics(),
        manager.get_test_metrics(),
    )
    assert list(train) == ["accuracy"] and list(val) == ["accuracy", "f1", "auroc"]
    assert list(test) == ["accuracy", "auroc"]
    assert type(val["accuracy"]).__name__ == "MulticlassAccuracy" and val["f1"].num_classes == 4
    assert val["accuracy"] is not train["accuracy"] is not test["accuracy"]
    target = torch.tensor([0, 1, 2, 3])
    logits = torch.eye(4)[[0, 1, 2, 0]] * 5  # 3 of 4 right
    manager.update("val", logits, target)
    assert manager.get_val_metrics()["accuracy"].compute().item() == pytest.approx(0.75)
    assert manager.get_metric_by_name("accuracy") is val["accuracy"]  # val first
    assert manager.get_metric_by_name("accuracy", "Test") is test["accuracy"]
    assert manager.get_metric_by_name("f1", "train") is None
    assert manager.get_metric_by_name("nope") is None


def test_config_lookups_by_name():
    configs = _configs()
    manager = MetricManager(configs, num_classes=4)
    assert manager.get_metric_config("val", "f1") is configs[1]
    assert manager.get_metric_config("VAL", "f1") is configs[1]
    assert manager.get_metric_config("train", "f1") is None  # f1 does not run in train
    assert manager.get_metric_config("val", "nope") is None
    assert manager.get_config_by_name("auroc") is configs[2]
    assert manager.get_config_by_name("nope") is None
    assert manager.config("accuracy") is configs[0]
    with pytest.raises(ConfigValueError, match=r"stage='training'.*'train', 'val', 'test'"):
        manager.get_metric_config("training", "f1")


def test_module_behaviour_is_unchanged_by_the_collection_methods():
    from lightning.pytorch.utilities.model_summary import ModelSummary

    manager = MetricManager(_configs(), num_classes=4, multi_label=True)
    assert manager.state_dict() == {}  # metric states and the threshold are not persistent
    assert bool(manager) and bool(MetricManager.for_model([], 4))  # a module is always true
    for twin in (copy.deepcopy(manager), pickle.loads(pickle.dumps(manager))):
        assert [c.name for c in twin] == ["accuracy", "f1", "auroc"]
        assert twin.get_val_metrics()["f1"] is not manager.get_val_metrics()["f1"]
        twin.update("val", torch.randn(2, 4), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]))
        assert 0.0 <= twin.get_val_metrics()["f1"].compute().item() <= 1.0
    moved = manager.to(torch.float64)
    assert moved is manager and manager.label_threshold.dtype == torch.float64
    model = build(metrics=_configs())
    summary = str(ModelSummary(model, max_depth=1))
    assert "metrics" in summary and "MetricManager" in summary
    assert not any(k.startswith("metrics.") for k in model.state_dict())


def test_image_classifier_metric_properties():
    model = build(metrics=_configs())
    assert model.train_metrics is model.metrics.get_train_metrics()
    assert model.val_metrics is model.metrics.get_val_metrics()
    assert list(model.test_metrics) == ["accuracy", "auroc"]
    assert len(build().val_metrics) == 0  # metrics=[]: a model without metrics


def test_a_manager_given_to_the_model_is_the_one_it_updates():
    manager = MetricManager(_configs(), num_classes=10)
    model = build(metrics=manager)
    assert model.metrics is manager and model.val_metrics is manager.get_val_metrics()
    with pytest.raises(
        ConfigValueError, match=r"metrics.num_classes=3: the MetricManager was built"
    ):
        build(metrics=MetricManager(_configs(), num_classes=3))
    with pytest.raises(KeyError, match=r"no metric named 'nope'; accepted: \['accuracy', 'f1'"):
        manager.config("nope")


# ------------------------------------------------------------------ letter case and refusals


def test_positional_arguments_follow_autotimms_order():
    config = MetricConfig("f1", "TorchMetrics", "F1Score", {"average": "macro"}, ["Val"])
    assert (config.backend, config.metric_class, config.stages) == (
        "torchmetrics",
        "F1Score",
        ["val"],
    )
    assert config.params == {"average": "macro"}


def test_backend_and_stages_take_any_letter_case():
    config = MetricConfig(
        name="acc", metric_class="Accuracy", backend="TorchMetrics", stages=["Train", "VAL"]
    )
    assert config.backend == "torchmetrics" and config.stages == ["train", "val"]
    assert MetricConfig(name="a", metric_class="Accuracy", stages="Test").stages == ["test"]
    repeated = MetricConfig(name="a", metric_class="Accuracy", stages=["val", "Val"])
    assert repeated.stages == ["val"]
    custom = MetricConfig(
        name="f1", metric_class="torchmetrics.F1Score", backend="CUSTOM", stages=["TEST"]
    )
    assert custom.backend == "custom" and custom.to_dict()["stages"] == ["test"]


BAD_CONFIGS = [
    (dict(name=""), "name=''", "non-empty string"),
    (dict(name="   "), "name='   '", "non-empty string"),
    (dict(backend=""), "acc.backend=''", "'torchmetrics', 'custom'"),
    (dict(backend="sklearn"), "acc.backend='sklearn'", "'torchmetrics', 'custom'"),
    (dict(metric_class=""), "acc.metric_class=''", "non-empty string"),
    (dict(stages=[]), "acc.stages=[]", "empty"),
    (dict(stages=["train", "Training"]), "acc.stages=", "unknown stage ['Training']"),
    (dict(stages=None), "acc.stages=None", "not a list"),
]


@pytest.mark.parametrize(("fields", "key", "problem"), BAD_CONFIGS, ids=lambda v: str(v)[:30])
def test_bad_metric_config_names_the_field(fields, key, problem):
    options = dict(name="acc", metric_class="Accuracy", stages=["val"])
    options.update(fields)
    with pytest.raises(ConfigValueError) as info:
        MetricConfig(**options)
    assert key in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    ("configs", "num_classes", "expected"),
    [
        ([], 3, ["configs=[]", "at least one MetricConfig", "metrics=[]"]),
        (None, 3, ["configs=[]", "at least one MetricConfig"]),
        ("accuracy", 3, ["configs='accuracy'", "not a list"]),
        (_configs, 0, ["num_classes=0", ">= 1"]),
        (_configs, -2, ["num_classes=-2", ">= 1"]),
        (_configs, 2.5, ["num_classes=2.5", "integer"]),
        (_configs, True, ["num_classes=True", "integer"]),
        (_configs, "3", ["num_classes='3'", "integer"]),
    ],
    # a function's name, not its repr (an address): pytest-xdist's workers must collect
    # the same ids
    ids=lambda value: value.__name__ if callable(value) else str(value),
)
def test_bad_manager_arguments_are_refused(configs, num_classes, expected):
    configs = configs() if callable(configs) else configs
    with pytest.raises(ConfigValueError) as info:
        MetricManager(configs, num_classes)
    assert all(part in str(info.value) for part in expected), str(info.value)


def test_a_model_may_have_no_metrics():
    empty = MetricManager.for_model([], 3)
    assert len(empty) == 0 and list(empty) == [] and len(empty.get_val_metrics()) == 0
    assert empty.update("val", torch.randn(2, 3), torch.tensor([0, 1])) == {}
    assert len(MetricManager.for_model(None, 3)) == 0
    assert [c.name for c in MetricManager.for_model(MetricManager(_configs(), 4), 4)] == [
        "accuracy",
        "f1",
        "auroc",
    ]
    assert len(build(metrics=[]).metrics) == 0


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.0, "threshold=0.0"),
        (1.0, "threshold=1.0"),
        (-0.5, "threshold=-0.5"),
        ("high", "threshold='high'"),
        (True, "threshold=True"),
        ([0.5, 0.5], "threshold=[0.5, 0.5]: 2 entries"),
        ([0.5, 0.5, 1.5], "threshold=[0.5, 0.5, 1.5]: 3 entries"),
    ],
)
def test_bad_threshold_is_refused(threshold, expected):
    with pytest.raises(ConfigValueError) as info:
        MetricManager(_configs(), 3, multi_label=True, threshold=threshold)
    assert expected in str(info.value) and "a list of 3 such numbers" in str(info.value)


# ------------------------------------------------------------------ multi-label

# 4 images, 3 labels. sigmoid(logits) (rounded):
#   [0.881 0.269 0.500]  target [1 0 1]   preds at 0.5 ("> 0.5"): [1 0 0]
#   [0.119 0.731 0.622]         [0 1 0]                            [0 1 1]
#   [0.731 0.550 0.047]         [1 0 0]                            [1 1 0]
#   [0.378 0.119 0.953]         [1 0 1]                            [0 0 1]
# per label: correct 3/4, 3/4, 2/4 -> accuracy 8/12; F1 0.8, 2/3, 0.5 -> macro 0.6556
LOGITS = torch.tensor([[2.0, -1.0, 0.0], [-2.0, 1.0, 0.5], [1.0, 0.2, -3.0], [-0.5, -2.0, 3.0]])
TARGETS = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1]])  # float, as BCE has them


def _sklearn_scores(threshold: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score, roc_auc_score

    probs = 1 / (1 + np.exp(-LOGITS.double().numpy()))
    target = TARGETS.numpy().astype(int)
    preds = (probs > threshold).astype(int)
    return {
        "accuracy": float((preds == target).mean()),
        "f1_macro": f1_score(target, preds, average="macro"),
        "balanced_accuracy": float((preds == target).mean(axis=0).mean()),
        "auroc": roc_auc_score(target, probs, average="macro"),
    }


def test_multi_label_metrics_from_the_default_set_match_hand_and_sklearn(caplog):
    with caplog.at_level(logging.INFO, logger="autotimm.metrics.manager"):
        manager = MetricManager(_conf_metrics("classification"), 3, multi_label=True)
    assert [c.name for c in manager] == ["accuracy", "f1_macro", "balanced_accuracy", "auroc"]
    assert "'top5' left out: top_k has no multi-label meaning" in caplog.text
    assert "'calibration_error' left out: torchmetrics has no multi-label Calib" in caplog.text
    val = manager.get_val_metrics()
    assert type(val["accuracy"]).__name__ == "MultilabelAccuracy"
    assert val["auroc"].num_labels == 3 and val["f1_macro"].threshold == 0.5
    manager.update("val", LOGITS, TARGETS)
    scores = {name: metric.compute().item() for name, metric in val.items()}
    assert scores["accuracy"] == pytest.approx(8 / 12)
    assert scores["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    assert scores == pytest.approx(_sklearn_scores(np.full(3, 0.5)), abs=1e-6)


def test_multi_label_per_label_threshold():
    # label 2 at 0.4: [1 1 0 1] vs [1 0 0 1] -> 3/4 right, F1 0.8; label 0 at 0.6: unchanged
    threshold = [0.6, 0.5, 0.4]
    manager = MetricManager(_conf_metrics("classification"), 3, True, threshold=threshold)
    manager.update("test", LOGITS, TARGETS)
    scores = {n: m.compute().item() for n, m in manager.get_test_metrics().items()}
    assert scores["accuracy"] == pytest.approx(9 / 12)
    assert scores["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 0.8) / 3)
    assert scores == pytest.approx(_sklearn_scores(np.array(threshold)), abs=1e-6)


def test_multi_label_inputs_probs_labels_and_step_values():
    RecordingMetric.instances.clear()
    recorder = "helpers_library.RecordingMetric"
    configs = [
        MetricConfig(name="probs", metric_class=recorder, backend="custom", stages=["val"]),
        MetricConfig(
            name="labels", metric_class=recorder, backend="custom", stages=["val"], preds="labels"
        ),
        MetricConfig(name="acc", metric_class="Accuracy", stages=["val"], log_on_step=True),
    ]
    manager = MetricManager(configs, 3, multi_label=True, threshold=torch.tensor(0.7))
    values = manager.update("val", LOGITS, TARGETS)
    probs_metric, labels_metric = RecordingMetric.instances
    assert probs_metric.num_classes == 3  # a class without num_labels gets num_classes
    assert torch.allclose(probs_metric.seen[0], torch.sigmoid(LOGITS))
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])  # > 0.7
    assert torch.equal(labels_metric.seen[0], expected)
    assert values["acc"].item() == pytest.approx(10 / 12)  # vs TARGETS: 2 misses, at 0.7


def test_multi_label_refuses_single_task_metrics():
    cases = [
        ("MulticlassAccuracy", {}, "acc.metric_class='MulticlassAccuracy'", "MultilabelAccuracy"),
        ("BinaryF1Score", {}, "acc.metric_class='BinaryF1Score'", "'F1Score'"),
        ("Accuracy", {"task": "binary"}, "acc.params.task='binary'", "'multilabel'"),
    ]
    for metric_class, params, key, instead in cases:
        config = MetricConfig(name="acc", metric_class=metric_class, params=params, stages=["val"])
        with pytest.raises(ConfigValueError) as info:
            MetricManager([config], 3, multi_label=True)
        assert key in str(info.value) and instead in str(info.value), str(info.value)
        MetricManager([config], 3)  # the same config is fine single-label


def test_single_label_default_is_unchanged():
    manager = MetricManager(_conf_metrics("classification"), 10)
    assert [c.name for c in manager][:2] == ["accuracy", "top5"] and len(manager) == 6
    assert type(manager.get_test_metrics()["calibration_error"]).__name__ == (
        "MulticlassCalibrationError"
    )
    assert "label_threshold" not in dict(manager.named_buffers())
    assert not manager.multi_label
