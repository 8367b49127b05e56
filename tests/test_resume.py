"""A run resumed with more epochs re-sizes its schedule (autotimm.optim.resizing_schedulers): real
Trainer.fit runs on digits, stopped part-way, then resumed with `Trainer.fit(ckpt_path=...)` as a
library user would (train.py does the same through ImageClassifier)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from helpers_library import (  # noqa: F401  (_one_torch_thread is an autouse fixture)
    LrRecorder,
    _one_torch_thread,
    build,
    digits_loader,
    make_trainer,
)
from lightning.pytorch.callbacks import ModelCheckpoint

from autotimm.optim.resizing_schedulers import position, stretched

LR = 1e-3
BATCHES = 2  # optimizer steps per epoch


class StopAfter(L.Callback):
    """Ends fit after `epochs` epochs, as an interrupted run would (last.ckpt is saved)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _fit(tmp_path: Path, epochs: int, ckpt: Path | None, stop: int | None, **model: Any):
    """Fit a tiny classifier for `epochs` (stopped after `stop`), saving last.ckpt in
    tmp_path, resuming from `ckpt`; returns the lr recorder."""
    recorder = LrRecorder()
    callbacks: list[L.Callback] = [recorder, ModelCheckpoint(dirpath=tmp_path, save_last=True)]
    if stop is not None:
        callbacks.append(StopAfter(stop))
    trainer = make_trainer(
        max_epochs=epochs,
        limit_train_batches=BATCHES,
        limit_val_batches=0,
        callbacks=callbacks,
        enable_checkpointing=True,
    )
    classifier = build(backbone="test_resnet", lr=LR, **model)
    trainer.fit(classifier, digits_loader(0, 8 * BATCHES, 8), ckpt_path=ckpt)
    assert trainer.global_step == BATCHES * (stop or epochs)
    return recorder


def _stopped_then_resumed(tmp_path: Path, first: int, stop: int, second: int, **model: Any):
    """A run planned for `first` epochs stops after `stop`; resumed to `second` epochs."""
    before = _fit(tmp_path, first, None, stop, **model)
    after = _fit(tmp_path / "resumed", second, tmp_path / "last.ckpt", None, **model)
    assert len(after.step_lrs) == BATCHES * (second - stop)
    return before, after


def _non_increasing(values: list[float]) -> bool:
    return all(b <= a * (1 + 1e-9) for a, b in zip(values, values[1:], strict=False))


def test_cosine_resumed_longer_anneals_from_where_it_stopped_to_the_new_end(tmp_path):
    before, after = _stopped_then_resumed(tmp_path, 4, 2, 8, scheduler="cosine")
    total = 4 * BATCHES  # the first plan; the resumed run has 12 steps left
    cosine = [LR * 0.5 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    assert before.step_lrs == pytest.approx(cosine[:4])
    # the next step trains at the lr the first plan had for it; no climb back up
    assert after.step_lrs[0] == pytest.approx(cosine[4])
    assert _non_increasing(before.step_lrs + after.step_lrs)
    # the rest of the cosine (positions 4..7) stretched over the 12 steps left
    stretched_positions = [4 + i * 3 / 11 for i in range(12)]
    expected = [LR * 0.5 * (1 + math.cos(math.pi * p / total)) for p in stretched_positions]
    assert after.step_lrs == pytest.approx(expected)
    assert after.step_lrs[-1] == pytest.approx(cosine[-1])  # ends where the schedule ends
    assert after.final_lr <= after.step_lrs[-1]


def test_cosine_after_a_warm_up_resumed_longer(tmp_path):
    kwargs = {"scheduler": "cosine", "scheduler_kwargs": {"warmup_epochs": 1}}
    before, after = _stopped_then_resumed(tmp_path, 4, 2, 8, **kwargs)
    assert before.step_lrs[0] == pytest.approx(0.01 * LR)  # the warm-up, then the cosine
    main = 3 * BATCHES  # the cosine's own steps after the warm-up epoch
    assert after.step_lrs[0] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 2 / main)))
    assert _non_increasing(before.step_lrs[BATCHES:] + after.step_lrs)
    last = LR * 0.5 * (1 + math.cos(math.pi * (main - 1) / main))
    assert after.step_lrs[-1] == pytest.approx(last)


def test_onecycle_resumed_longer_finishes_its_annealing_without_error(tmp_path):
    before, after = _stopped_then_resumed(
        tmp_path, 4, 2, 8, scheduler="onecycle", scheduler_kwargs={"pct_start": 0.25}
    )
    # without re-sizing, OneCycleLR raised "Tried to step 9 times" at the 9th step
    assert max(before.step_lrs) == pytest.approx(LR)  # the peak was in the first run
    assert after.step_lrs[0] <= before.step_lrs[-1]
    assert _non_increasing(after.step_lrs)
    # the last step trains at OneCycleLR's final lr: max_lr / div_factor / final_div_factor
    assert after.step_lrs[-1] == pytest.approx(LR / 25 / 1e4)
    assert after.step_lrs[-2] > after.step_lrs[-1] * 10  # annealed over the run, not at once


def test_step_resumed_longer_moves_its_remaining_decays_to_the_new_length(tmp_path):
    # 6 epochs: step_size 2 (a third); stopped after 3 epochs, resumed to 12
    before, after = _stopped_then_resumed(tmp_path, 6, 3, 12, scheduler="step")
    assert before.epoch_lrs == pytest.approx([LR, LR, LR * 0.1])
    assert _non_increasing(before.epoch_lrs + after.epoch_lrs)
    # epoch 3 keeps the first plan's lr; the one decay left (epoch 4 of 6) moves to
    # epoch 7 of 12; the last epoch trains at the first plan's last lr
    assert after.epoch_lrs == pytest.approx([LR * 0.1] * 4 + [LR * 0.01] * 5)


def test_a_finished_schedule_resumed_longer_stays_at_its_last_lr(tmp_path, caplog):
    before = _fit(tmp_path, 2, None, None, scheduler="cosine")
    with caplog.at_level(logging.WARNING, logger="autotimm.optim.resizing_schedulers"):
        after = _fit(tmp_path / "resumed", 4, tmp_path / "last.ckpt", None, scheduler="cosine")
    # torch's cosine climbed back up from 0 here; the lr after the last step (0) is not used
    assert after.step_lrs == pytest.approx([before.step_lrs[-1]] * 4)
    assert "had finished its schedule" in caplog.text


def test_a_length_set_by_the_user_is_kept(tmp_path, caplog):
    kwargs = {"scheduler": "step", "scheduler_kwargs": {"step_size": 1, "gamma": 0.5}}
    _fit(tmp_path, 4, None, 2, **kwargs)
    with caplog.at_level(logging.WARNING, logger="autotimm.optim.resizing_schedulers"):
        after = _fit(tmp_path / "resumed", 5, tmp_path / "last.ckpt", None, **kwargs)
    assert after.epoch_lrs == pytest.approx([LR * 0.5**e for e in (2, 3, 4)])
    assert "keeps the length set in scheduler_kwargs" in caplog.text


def test_resizing_twice_composes():
    """N -> M -> K: each resize continues from where the previous plan had got to."""
    first = stretched(None, 4, 8, 16)  # positions 4..7 over steps 4..15
    assert position(first, 4) == 4 and position(first, 15) == pytest.approx(7)
    second = stretched(first, 10, 16, 30)  # at step 10 of 16, now to 30
    assert position(second, 10) == pytest.approx(position(first, 10))
    assert position(second, 29) == pytest.approx(7)
    # a shorter run squeezes the rest and never steps past the plan's end
    shorter = stretched(None, 2, 8, 5)
    assert position(shorter, 4) == pytest.approx(7) and position(shorter, 5) == 8
    assert stretched(first, 3, 16, 16) is first and stretched(None, 8, 8, 9) is None
