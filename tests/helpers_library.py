"""Shared helpers for the library tests: real digits data, tiny trainers, lr recorders.

Kept out of conftest.py on purpose (another suite owns it); import what you need.
"""

from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

# W&B must never try the network in tests, and must stay quiet.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchmetrics  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

NUM_CLASSES = 10
IMAGE_SIZE = 32


@lru_cache(maxsize=1)
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 sklearn digits as (N, 3, 32, 32) float images in [-1, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=IMAGE_SIZE, mode="bilinear")
    images = (images * 2.0 - 1.0).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    return images, labels


def digits_dataset(start: int = 0, count: int = 128) -> TensorDataset:
    images, labels = digits_tensors()
    return TensorDataset(images[start : start + count], labels[start : start + count])


def digits_loader(
    start: int = 0, count: int = 128, batch_size: int = 16, shuffle: bool = False
) -> DataLoader:
    return DataLoader(
        digits_dataset(start, count), batch_size=batch_size, shuffle=shuffle, num_workers=0
    )


def train_val_loaders(
    train_count: int = 64, val_count: int = 32, batch_size: int = 16
) -> tuple[DataLoader, DataLoader]:
    """Disjoint train (first digits) and val (from index 1000) loaders."""
    return (
        digits_loader(0, train_count, batch_size),
        digits_loader(1000, val_count, batch_size),
    )


def one_batch(batch_size: int = 8, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = digits_tensors()
    return images[start : start + batch_size].clone(), labels[start : start + batch_size].clone()


def make_trainer(**overrides: Any) -> L.Trainer:
    """A quiet CPU trainer; tests override what they need."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=False,
    )
    options.update(overrides)
    return L.Trainer(**options)


def accuracy_metrics(stages: list[str] | None = None) -> list[Any]:
    from autotimm import MetricConfig

    return [
        MetricConfig(
            name="accuracy",
            backend="torchmetrics",
            metric_class="Accuracy",
            params={"task": "multiclass"},
            stages=stages or ["train", "val", "test"],
        )
    ]


class LrRecorder(L.Callback):
    """Records the lr of param group 0 used by each optimizer step and at each epoch start."""

    def __init__(self) -> None:
        self.step_lrs: list[float] = []
        self.epoch_lrs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.step_lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.final_lr = trainer.optimizers[0].param_groups[0]["lr"]


def read_metrics_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    """Non-empty values of one metrics.csv column, in order."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny 32x32 models run as fast on one thread, and 2-core CI boxes don't thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(**overrides: Any) -> Any:
    """A resnet18 ImageClassifier for 10 digit classes; keyword overrides win."""
    from autotimm import ImageClassifier

    options: dict[str, Any] = dict(backbone="resnet18", num_classes=NUM_CLASSES, metrics=[])
    options.update(overrides)
    return ImageClassifier(**options)


class ProbsReadingAccuracy(torchmetrics.classification.MulticlassAccuracy):
    """A stat-score subclass whose own update reads the probabilities (counts only rows
    predicted with confidence >= 0.5): it must be fed probabilities, not labels."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        confident = preds.max(dim=-1).values >= 0.5
        super().update(preds[confident], target[confident])


class RecordingMetric(torchmetrics.Metric):
    """Keeps every `preds` it is given (to check what metrics receive); value = count."""

    instances: list[RecordingMetric] = []

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.seen: list[torch.Tensor] = []
        RecordingMetric.instances.append(self)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.seen.append(preds.detach().clone())
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return self.count
