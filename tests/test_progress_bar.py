"""The rich progress bar reads the logged metrics only every few steps (each read syncs a GPU)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autotimm import ImageClassifier, MetricConfig
from autotimm.training.callbacks import RichProgressBar


def _reads_during_fit(monkeypatch, tmp_path, bar, **trainer_kwargs) -> tuple[list[int], dict]:
    """The global steps at which `bar` read the logged metrics during one 7-step epoch."""
    reads: list[int] = []
    original = RichProgressBar.get_metrics

    def counting_get_metrics(self, trainer, pl_module):
        reads.append(trainer.global_step)
        return original(self, trainer, pl_module)

    monkeypatch.setattr(RichProgressBar, "get_metrics", counting_get_metrics)
    images, labels = torch.randn(28, 3, 32, 32), torch.randint(0, 4, (28,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)  # 7 steps
    model = ImageClassifier(  # timm's smallest resnet: the bar is the subject, not the model
        "test_resnet", 4, [MetricConfig(name="accuracy", metric_class="Accuracy")], scheduler=None
    )
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(model, loader)
    return [step for step in reads if 0 < step <= 7], bar.get_metrics(trainer, model)


def test_metrics_are_read_every_n_training_steps(monkeypatch, tmp_path):
    bar = RichProgressBar(metrics_every_n_steps=3)
    train_reads, shown = _reads_during_fit(monkeypatch, tmp_path, bar, log_every_n_steps=5)
    # after steps 3 and 6, then once at the end of the epoch (step 7): not 7 reads
    assert train_reads[:2] == [3, 6]
    assert len(train_reads) <= 4
    assert "train/loss" in shown


def test_by_default_metrics_are_read_on_the_loggers_steps(monkeypatch, tmp_path):
    """No steps beyond those the loggers write: each read makes the step log its values."""
    logged_steps: list[int] = []
    original_log = L.LightningModule.log

    def counting_log(self, name, *args, **kwargs):
        if name == "train/loss":
            logged_steps.append(self.trainer.global_step + 1)  # the step being run
        return original_log(self, name, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counting_log)
    train_reads, shown = _reads_during_fit(
        monkeypatch, tmp_path, RichProgressBar(metrics_every_s=3600), log_every_n_steps=2
    )
    assert train_reads[:3] == [2, 4, 6]  # log_every_n_steps=2, then the epoch's last step
    assert logged_steps == [2, 4, 6, 7]
    assert "train/loss" in shown


def test_slow_steps_are_read_after_metrics_every_s(monkeypatch, tmp_path):
    """A step slower than metrics_every_s is read (and logs) although the loggers' next
    step is far: the numbers on the bar stay live on slow models."""
    bar = RichProgressBar(metrics_every_s=1e-9)  # every step is "slow"
    train_reads, _ = _reads_during_fit(monkeypatch, tmp_path, bar, log_every_n_steps=50)
    assert train_reads[:7] == [1, 2, 3, 4, 5, 6, 7]


def test_metrics_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match="metrics_every_n_steps.*>= 1 or null.*got 0"):
        RichProgressBar(metrics_every_n_steps=0)
    assert RichProgressBar(metrics_every_n_steps=None).metrics_every_n_steps is None
    with pytest.raises(ValueError, match="metrics_every_s must be > 0 seconds, got 0"):
        RichProgressBar(metrics_every_s=0)


def test_the_bar_redraws_four_times_a_second_unless_told_otherwise():
    # Lightning's default (100 a second) redraws after nearly every short step: ~1.5 ms each
    assert RichProgressBar().refresh_rate == 4
    assert RichProgressBar(refresh_rate=10).refresh_rate == 10


def test_the_training_count_moves_as_often_as_the_bar_redraws(monkeypatch, tmp_path):
    """Fast steps: the count is updated at most `refresh_rate` times a second (what the bar
    can show), on reads and at the epoch's last batch, which always shows the full count."""
    counts: list[int] = []
    original = RichProgressBar._update

    def recording_update(self, progress_bar_id, current, *args, **kwargs):
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            counts.append(current)
        return original(self, progress_bar_id, current, *args, **kwargs)

    monkeypatch.setattr(RichProgressBar, "_update", recording_update)
    slow_redraws = RichProgressBar(refresh_rate=1, metrics_every_s=3600)
    train_reads, _ = _reads_during_fit(monkeypatch, tmp_path, slow_redraws, log_every_n_steps=3)
    assert counts[-1] == 7  # the epoch ends on the full count
    assert len(counts) < 7  # 7 steps of milliseconds: not one update each
    assert set(train_reads) <= set(counts)  # every read step updates the count too
    counts.clear()
    every_step = RichProgressBar(refresh_rate=1_000_000, metrics_every_s=3600)
    _reads_during_fit(monkeypatch, tmp_path, every_step, log_every_n_steps=50)
    assert counts == [1, 2, 3, 4, 5, 6, 7]


def test_an_epoch_stopped_early_ends_on_its_true_count(monkeypatch, tmp_path):
    """max_steps mid-epoch (or should_stop, or an unknown length): the count shown last is
    the steps run, though the count skips updates between redraws."""
    counts: list[int] = []
    original = RichProgressBar._update

    def recording_update(self, progress_bar_id, current, *args, **kwargs):
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            counts.append(current)
        return original(self, progress_bar_id, current, *args, **kwargs)

    monkeypatch.setattr(RichProgressBar, "_update", recording_update)
    bar = RichProgressBar(refresh_rate=1, metrics_every_s=3600)
    # 7 batches an epoch, stopped after 5: the epoch's last batch never comes
    _reads_during_fit(monkeypatch, tmp_path, bar, log_every_n_steps=50, max_steps=5)
    assert counts[-1] == 5


def test_enable_progress_bar_false_leaves_the_default_bar_out(run_app):
    """The default callbacks hold a RichProgressBar; Lightning refuses one when the bar is off."""
    from tests.conftest import FAST

    run = run_app(
        *FAST, "callbacks=default", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "test=false", "measure_cost=false",
    )  # fmt: skip
    assert run.code == 0, run.output[-2000:]
    assert run.results()["status"] == "completed"


def test_stopping_the_bar_does_not_wait_out_a_redraw_interval(monkeypatch, tmp_path):
    # one redraw a second: Lightning's redraw thread sleeps a whole second between redraws
    # and the bar's stop (end of fit) joined it, up to a second at every stop
    import time

    bar = RichProgressBar(refresh_rate=1)
    stops: list[float] = []
    original = RichProgressBar._stop_progress

    def timed_stop(self):
        started = time.perf_counter()
        original(self)
        stops.append(time.perf_counter() - started)

    monkeypatch.setattr(RichProgressBar, "_stop_progress", timed_stop)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    model = ImageClassifier("test_resnet", 4, [], scheduler=None)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(TensorDataset(images, labels), batch_size=4))
    assert stops and max(stops) < 0.3, stops
