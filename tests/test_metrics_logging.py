"""Metric and LoggingConfig keys read back from real loggers (CSV, TensorBoard, W&B)."""

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
    RecordingMetric,
    _one_torch_thread,
    build,
    column,
    digits_loader,
    digits_tensors,
    make_trainer,
    read_metrics_csv,
)
from lightning.pytorch.loggers import CSVLogger

from autotimm import LoggingConfig, MetricConfig, MetricManager
from autotimm.metrics.stage_logs import StageLogs


def _metric(name, cls, stages, **extra):
    return MetricConfig(name=name, metric_class=cls, stages=stages, **extra)


def _outputs(model, start, count):
    images, labels = digits_tensors()
    model.eval()
    with torch.no_grad():
        logits = model(images[start : start + count])
    return logits, labels[start : start + count]


def _ece(probs: np.ndarray, target: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (L1, equal-width bins), written out independently."""
    confidence = probs.max(1)
    correct = (probs.argmax(1) == target).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += abs(correct[inside].mean() - confidence[inside].mean()) * inside.mean()
    return total


def test_metric_keys_and_values_from_csv(tmp_path):
    from sklearn.metrics import f1_score, roc_auc_score

    metrics = [
        _metric("accuracy", "Accuracy", ["train", "val", "test"], prog_bar=True),
        _metric("f1", "F1Score", ["val"], params={"average": "macro"}),
        _metric("top3", "Accuracy", ["test"], params={"top_k": 3}),
        _metric("auroc", "AUROC", ["test"]),
        _metric("ece", "CalibrationError", ["test"]),
    ]
    model = build(metrics=metrics, lr=3e-3, scheduler="none")
    logger = CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(
        logger=logger, limit_train_batches=4, limit_val_batches=None, log_every_n_steps=1
    )
    trainer.fit(model, digits_loader(0, 64, 16), digits_loader(1000, 100, 50))
    trainer.test(model, digits_loader(1200, 120, 40))
    rows = read_metrics_csv(Path(logger.log_dir) / "metrics.csv")
    keys = set(rows[0])

    expected = {
        "train/loss",
        "train/accuracy",
        "val/loss",
        "val/accuracy",
        "val/f1",
        "test/loss",
        "test/accuracy",
        "test/top3",
        "test/auroc",
        "test/ece",
    }
    assert expected <= keys, expected - keys
    for absent in ("train/f1", "test/f1", "train/top3", "val/top3", "train/auroc", "val/auroc"):
        assert absent not in keys

    # values, recomputed independently from the final model (val ran after the last step)
    logits, target = _outputs(model, 1000, 100)
    pred = logits.argmax(-1)
    assert column(rows, "val/accuracy") == [pytest.approx((pred == target).float().mean().item())]
    assert column(rows, "val/loss") == [pytest.approx(F.cross_entropy(logits, target).item(), 1e-5)]
    assert column(rows, "val/f1") == [
        pytest.approx(f1_score(target, pred, average="macro", zero_division=0), abs=1e-6)
    ]

    logits, target = _outputs(model, 1200, 120)
    probs = logits.softmax(-1)
    top3 = (probs.topk(3, dim=-1).indices == target[:, None]).any(-1).float().mean().item()
    assert column(rows, "test/top3") == [pytest.approx(top3)]
    assert column(rows, "test/accuracy") == [
        pytest.approx((probs.argmax(-1) == target).float().mean().item())
    ]
    auroc = roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert column(rows, "test/auroc") == [pytest.approx(auroc, abs=1e-4)]
    assert column(rows, "test/ece") == [
        pytest.approx(_ece(probs.numpy(), target.numpy()), abs=1e-5)
    ]
    assert column(rows, "test/loss") == [
        pytest.approx(F.cross_entropy(logits, target).item(), 1e-5)
    ]
    assert len(column(rows, "train/loss")) == 4  # per step (log_every_n_steps=1 below)


def test_metrics_receive_probabilities_or_labels():
    RecordingMetric.instances.clear()
    metrics = [
        _metric("probs", "helpers_library.RecordingMetric", ["val"], backend="custom"),
        _metric(
            "labels", "helpers_library.RecordingMetric", ["val"], backend="custom", preds="labels"
        ),
    ]
    model = build(metrics=metrics)
    make_trainer().validate(model, digits_loader(1000, 16, 8), verbose=False)
    probs_metric, labels_metric = RecordingMetric.instances
    assert probs_metric.num_classes == NUM_CLASSES  # num_classes filled in
    assert len(probs_metric.seen) == 1
    probs = probs_metric.seen[0]
    assert probs.shape == (8, NUM_CLASSES) and probs.is_floating_point()
    assert torch.all((probs >= 0) & (probs <= 1))
    assert torch.allclose(probs.sum(-1), torch.ones(8), atol=1e-5)
    labels = labels_metric.seen[0]
    assert labels.shape == (8,) and labels.dtype == torch.long
    assert torch.equal(labels, probs.argmax(-1))


def test_argmax_only_metrics_get_labels_with_the_values_probabilities_give():
    """Stat-score metrics at top_k=1 read probabilities only through their argmax: they are
    fed the labels (one argmax for all, no softmax); the others keep the probabilities."""
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassAUROC,
        MulticlassF1Score,
        MulticlassPrecision,
    )

    configs = [
        _metric("accuracy", "Accuracy", ["val"]),
        _metric("f1", "F1Score", ["val"], params={"average": "macro"}),
        _metric("precision", "Precision", ["val"], params={"average": "weighted"}),
        _metric("top3", "Accuracy", ["val"], params={"top_k": 3}),
        _metric("auroc", "AUROC", ["val"]),
    ]
    manager = MetricManager(configs, num_classes=NUM_CLASSES)
    assert manager._feeds == {
        "accuracy": "labels",
        "f1": "labels",
        "precision": "labels",
        "top3": "probs",
        "auroc": "probs",
    }
    references = {
        "accuracy": MulticlassAccuracy(NUM_CLASSES, average="micro"),
        "f1": MulticlassF1Score(NUM_CLASSES, average="macro"),
        "precision": MulticlassPrecision(NUM_CLASSES, average="weighted"),
        "top3": MulticlassAccuracy(NUM_CLASSES, top_k=3, average="micro"),
        "auroc": MulticlassAUROC(NUM_CLASSES),
    }
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        logits = torch.randn(40, NUM_CLASSES, generator=generator) * 3
        target = torch.randint(0, NUM_CLASSES, (40,), generator=generator)
        manager.update("val", logits, target, step_values=False)
        for reference in references.values():
            reference.update(logits.softmax(-1), target)
    for name, metric in manager.get("val").items():
        assert metric.compute().item() == pytest.approx(references[name].compute().item()), name
    # a subclass with its own update may read the probabilities: it keeps getting them
    custom = [_metric("mine", "helpers_library.ProbsReadingAccuracy", ["val"], backend="custom")]
    assert MetricManager(custom, num_classes=NUM_CLASSES)._feeds == {"mine": "probs"}


def test_metric_manager_separate_instances_per_stage():
    manager = MetricManager(
        [_metric("accuracy", "Accuracy", ["train", "val"])], num_classes=NUM_CLASSES
    )
    train, val = manager.get("train")["accuracy"], manager.get("val")["accuracy"]
    assert train is not val
    assert len(manager.get("test")) == 0
    assert train.num_classes == NUM_CLASSES
    target = torch.arange(10)
    perfect = F.one_hot(target, NUM_CLASSES).float() * 10
    manager.update("train", perfect, target)
    manager.update("val", perfect.roll(1, dims=0), target)  # all wrong
    assert train.compute().item() == 1.0
    assert val.compute().item() == 0.0


def test_metric_class_lookup_and_custom_backend():
    from torchmetrics.classification import MulticlassAUROC, MulticlassF1Score

    manager = MetricManager(
        [
            _metric("auroc", "MulticlassAUROC", ["val"]),  # only in torchmetrics.classification
            _metric(
                "f1",
                "torchmetrics.classification.MulticlassF1Score",
                ["val"],
                backend="custom",
                params={"average": "micro"},
            ),
        ],
        num_classes=7,
    )
    auroc, f1 = manager.get("val")["auroc"], manager.get("val")["f1"]
    assert isinstance(auroc, MulticlassAUROC) and auroc.num_classes == 7
    assert isinstance(f1, MulticlassF1Score) and f1.num_classes == 7 and f1.average == "micro"
    with pytest.raises(ValueError, match="F2Score"):
        MetricManager([_metric("f2", "F2Score", ["val"])], num_classes=3)
    with pytest.raises(ValueError, match="unique"):
        MetricManager([_metric("a", "Accuracy", ["val"])] * 2, num_classes=3)
    with pytest.raises(ValueError, match="never be logged"):
        _metric("a", "Accuracy", ["val"], log_on_step=False, log_on_epoch=False)


def test_step_and_epoch_metric_logging(tmp_path):
    metrics = [_metric("accuracy", "Accuracy", ["train"], log_on_step=True)]
    model = build(metrics=metrics, scheduler="none")
    logger = CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(logger=logger, limit_train_batches=3, log_every_n_steps=1)
    trainer.fit(model, digits_loader(0, 48, 16))
    rows = read_metrics_csv(Path(logger.log_dir) / "metrics.csv")
    steps = column(rows, "train/accuracy_step")
    epoch = column(rows, "train/accuracy")
    assert len(steps) == 3 and len(epoch) == 1
    # equal batch sizes: the epoch accuracy is the mean of the step accuracies
    assert epoch[0] == pytest.approx(sum(steps) / 3, abs=1e-6)


# ---------------------------------------------------------------- LoggingConfig


def _norm64(tensors) -> float:
    return math.sqrt(sum(t.double().pow(2).sum().item() for t in tensors))


class _Reference(L.Callback):
    """Computes lr, weight norm and gradient norm independently of the module.

    Norms twice: with torch's own clip_grad_norm_ (float32, what the logged value must
    equal) and exactly in float64 (torch's float32 norm of multi-million-element
    tensors is off by a few 1e-5 relative).
    """

    def __init__(self) -> None:
        self.lr: list[float] = []
        self.weight_norm: list[float] = []
        self.weight_norm64: list[float] = []
        self.grad_norm: list[float] = []
        self.grad_norm64: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])
        params = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        self.weight_norm.append(torch.nn.utils.get_total_norm(params).item())
        self.weight_norm64.append(_norm64(params))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for p in pl_module.parameters() if p.grad is not None]
        # max_norm=inf: returns the total norm and leaves the gradients as they are
        self.grad_norm.append(torch.nn.utils.clip_grad_norm_(params, math.inf).item())
        self.grad_norm64.append(_norm64(p.grad for p in params))


def test_logging_config_keys_and_values(tmp_path):
    reference = _Reference()
    model = build(
        scheduler="cosine",
        lr=1e-2,
        logging_config=LoggingConfig(
            log_learning_rate=True, log_gradient_norm=True, log_weight_norm=True
        ),
    )
    logger = CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(
        logger=logger,
        max_epochs=2,
        limit_train_batches=2,
        log_every_n_steps=1,
        gradient_clip_val=1.0,  # the logged norm is the one before clipping
        callbacks=[reference],
    )
    trainer.fit(model, digits_loader(0, 32, 16))
    rows = read_metrics_csv(Path(logger.log_dir) / "metrics.csv")
    assert column(rows, "train/lr") == pytest.approx(reference.lr, rel=1e-6)
    assert len(set(reference.lr)) == 4  # cosine: a new lr every step
    assert column(rows, "train/weight_norm") == pytest.approx(reference.weight_norm, rel=1e-6)
    assert column(rows, "train/weight_norm") == pytest.approx(reference.weight_norm64, rel=1e-4)
    assert column(rows, "train/grad_norm") == pytest.approx(reference.grad_norm, rel=1e-6)
    assert column(rows, "train/grad_norm") == pytest.approx(reference.grad_norm64, rel=1e-4)
    assert len(reference.grad_norm) == 4 and min(reference.grad_norm) > 1.0


def test_logging_config_off_logs_nothing_extra(tmp_path):
    model = build(scheduler="none")
    logger = CSVLogger(tmp_path, name="csv")
    make_trainer(logger=logger, log_every_n_steps=1).fit(model, digits_loader(0, 32, 16))
    keys = set(read_metrics_csv(Path(logger.log_dir) / "metrics.csv")[0])
    assert not keys & {"train/lr", "train/grad_norm", "train/weight_norm"}


def test_global_norm_is_one_device_tensor():
    from autotimm.model.classifier import _global_norm

    tensors = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)]
    norm = _global_norm(tensors)
    assert isinstance(norm, torch.Tensor) and norm.ndim == 0
    expected = torch.cat([t.flatten() for t in tensors]).norm()
    assert norm.item() == pytest.approx(expected.item(), rel=1e-6)


def test_confusion_matrix_goes_to_every_image_logger(tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    from sklearn.metrics import confusion_matrix
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb_config"))
    names = [f"digit{i}" for i in range(NUM_CLASSES)]
    model = build(
        logging_config=LoggingConfig(log_confusion_matrix=True),
        class_names=names,
        scheduler="none",
    )
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    wandb_logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="autotimm-tests")
    csv = CSVLogger(tmp_path, name="csv")
    try:
        trainer = make_trainer(
            logger=[csv, tensorboard, wandb_logger],
            max_epochs=2,
            limit_train_batches=1,
            limit_val_batches=None,
            num_sanity_val_steps=1,  # the sanity check must not log a matrix
        )
        trainer.fit(model, digits_loader(0, 16, 16), digits_loader(1000, 60, 30))
        run_dir = Path(wandb_logger.experiment.dir).parent
    finally:
        wandb.finish()

    # the matrix itself: accumulated over the whole val set of the last epoch
    logits, target = _outputs(model, 1000, 60)
    expected = confusion_matrix(target, logits.argmax(-1), labels=list(range(NUM_CLASSES)))
    assert model.last_confusion_matrix.tolist() == expected.tolist()
    assert int(model.last_confusion_matrix.sum()) == 60

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "val/confusion_matrix" in events.Tags()["images"]
    images = events.Images("val/confusion_matrix")
    assert len(images) == 2  # one per epoch, none from the sanity check
    assert images[0].width > 100 and images[0].height > 100

    media = list(run_dir.glob("files/media/images/val/confusion_matrix*.png"))
    assert len(media) == 2, sorted(p.name for p in run_dir.rglob("*"))


def test_confusion_figure_is_redrawn_like_a_new_one_for_each_matrix():
    """The figure of a class list is kept between validations: each matrix must still give
    the image a fresh figure gives (nothing left from the previous counts or colours)."""
    from autotimm.model import confusion

    names = [f"c{i}" for i in range(4)]
    first = torch.tensor([[9, 0, 0, 1], [0, 5, 5, 0], [2, 0, 7, 1], [0, 0, 0, 10]])
    second = torch.tensor([[0, 3, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [8, 0, 0, 2]])
    confusion._FIGURES.clear()
    image_first = confusion.render_confusion_matrix(first, names)
    kept = confusion.render_confusion_matrix(second, names)
    confusion._FIGURES.clear()
    fresh = confusion.render_confusion_matrix(second, names)
    assert kept.shape == fresh.shape and kept.dtype == np.uint8
    assert np.array_equal(kept, fresh)
    assert not np.array_equal(image_first, fresh)  # the counts do change the picture
    assert len(confusion._FIGURES) == 1


# ---------------------------------------------------------------- logging cadence (cost)


class _Losses(L.Callback):
    """Every training step's loss and batch size, read from the step's output."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(int(batch[0].shape[0]))


def test_step_values_every_log_every_n_steps_and_exact_epoch_means(tmp_path, monkeypatch):
    """Per-step values reach the logger every log_every_n_steps with the step's own value
    (as when every step logged); epoch values are the batch-size weighted means of every
    step; `self.log` runs only on those steps (and the epoch's last, for the progress
    bar), not on every step."""
    metrics = [_metric("accuracy", "Accuracy", ["train", "val"], log_on_step=True)]
    model = build(backbone="test_resnet", metrics=metrics, scheduler="none")
    model.logging_config.log_learning_rate = True
    calls: list[tuple[int, str]] = []
    original_log = L.LightningModule.log

    def counting_log(self, name, *args, **kwargs):
        calls.append((self.trainer.global_step, name))
        return original_log(self, name, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counting_log)
    logger, losses = CSVLogger(tmp_path, name="csv"), _Losses()
    trainer = make_trainer(
        logger=logger, limit_train_batches=7, log_every_n_steps=3, callbacks=[losses]
    )
    # 100 images in batches of 16: the 7th batch has 4, so the means must be weighted
    trainer.fit(model, digits_loader(0, 100, 16), digits_loader(1000, 32, 16))
    rows = read_metrics_csv(Path(logger.log_dir) / "metrics.csv")

    step_rows = [r for r in rows if r.get("train/loss")]
    # steps 3 and 6 (log_every_n_steps), each with its own loss
    assert [int(r["step"]) for r in step_rows] == [2, 5]
    for row in step_rows:
        assert float(row["train/loss"]) == pytest.approx(losses.losses[int(row["step"])], rel=1e-5)
    assert len(column(rows, "train/lr")) == 2 and len(column(rows, "train/accuracy_step")) == 2
    weighted = sum(x * n for x, n in zip(losses.losses, losses.sizes, strict=True))
    assert column(rows, "train/loss_epoch") == [
        pytest.approx(weighted / sum(losses.sizes), rel=1e-5)
    ]
    assert len(column(rows, "train/accuracy")) == 1 and len(column(rows, "val/loss")) == 1
    # training steps call self.log 3 x (loss, lr, accuracy_step) plus the epoch values,
    # not 7 x 4 as logging every step did
    train_calls = [name for _, name in calls if name.startswith("train/")]
    assert len(train_calls) <= 3 * 3 + 3, train_calls


class _Logged:
    """Stands in for the LightningModule: records what StageLogs logs."""

    def __init__(self) -> None:
        self.logged: dict[str, object] = {}

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = value


@pytest.mark.parametrize("limit", [None, 100])
@pytest.mark.parametrize("with_auroc", [True, False])
def test_kept_batches_give_the_metrics_the_same_epoch_state(monkeypatch, limit, with_auroc):
    """Steps that log nothing keep their logits (only their argmax labels when every metric
    reads just those: `with_auroc=False`) and the metrics get them in one update (at a
    logging step, at the epoch's end, or past PENDING_LIMIT elements): the epoch values
    equal those of one update per batch, and a logging step's value is its own batch's."""
    from autotimm.metrics import manager as metrics_module

    if limit is not None:  # 100 elements: every second batch of 8 x 10 logits flushes
        monkeypatch.setattr(metrics_module, "PENDING_LIMIT", limit)
    configs = [
        _metric("accuracy", "Accuracy", ["train"], log_on_step=True),
        _metric("f1_macro", "F1Score", ["train"], params={"average": "macro"}),
        *([_metric("auroc", "AUROC", ["train"])] if with_auroc else []),
    ]
    kept = StageLogs(MetricManager(configs, num_classes=NUM_CLASSES))
    reference = MetricManager(configs, num_classes=NUM_CLASSES)
    gen = torch.Generator().manual_seed(0)
    module = _Logged()
    kept.start_epoch("train")
    for step in range(9):
        logits = torch.randn(8, NUM_CLASSES, generator=gen)
        target = torch.randint(0, NUM_CLASSES, (8,), generator=gen)
        log_step = step == 4
        kept.step(module, "train", logits, target, torch.tensor(1.0), log_step)
        reference.update("train", logits, target, step_values=False)
        if log_step:
            batch_only = (logits.argmax(-1) == target).float().mean()
            assert float(module.logged["train/accuracy_step"]) == pytest.approx(float(batch_only))
        if limit is not None:
            assert kept.metrics._kept["train"].elements <= limit
        held = kept.metrics._kept["train"].logits
        if held:  # the labels (8,) or the logits (8, classes)
            assert held[-1].shape == ((8, NUM_CLASSES) if with_auroc else (8,))
    kept.end_epoch(module, "train")
    for name, metric in reference.get("train").items():
        assert float(module.logged[f"train/{name}"].compute()) == pytest.approx(
            float(metric.compute()), abs=1e-6
        ), name
    assert kept.metrics._kept["train"].elements == 0


def test_metrics_read_mid_epoch_include_every_kept_batch():
    """A callback reading `model.val_metrics` (or the manager's getters) before the epoch
    ends sees every batch so far, as when each step updated the metrics."""
    configs = [_metric("accuracy", "Accuracy", ["val"])]
    gen = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(8, NUM_CLASSES, generator=gen),
            torch.randint(0, NUM_CLASSES, (8,), generator=gen),
        )
        for _ in range(3)
    ]
    expected = torch.cat([(lg.argmax(-1) == t).float() for lg, t in batches]).mean()
    for read in (
        lambda m: m.val_metrics["accuracy"],
        lambda m: m.get_val_metrics()["accuracy"],
        lambda m: m.get_metric_by_name("accuracy"),
    ):
        manager = MetricManager(configs, num_classes=NUM_CLASSES)
        for logits, target in batches:
            manager.keep("val", logits, target)
        assert float(read(manager).compute()) == pytest.approx(float(expected))


def test_custom_metrics_are_updated_on_every_step():
    """A custom metric's state may count updates: its stage is not batched."""
    RecordingMetric.instances.clear()
    configs = [_metric("seen", "helpers_library.RecordingMetric", ["val"], backend="custom")]
    manager = MetricManager(configs, num_classes=NUM_CLASSES)
    for _ in range(3):
        manager.keep("val", torch.randn(4, NUM_CLASSES), torch.randint(0, NUM_CLASSES, (4,)))
    assert len(RecordingMetric.instances[0].seen) == 3
