"""last.ckpt without a second write (autotimm.training.callbacks.LastCheckpoint): real Lightning
fits of a tiny model whose validation score is scripted per epoch, with the default callbacks'
pair (best on the score + last every validation)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from autotimm.training.callbacks import LastCheckpoint


class Scripted(L.LightningModule):
    """A linear model whose `score` at validation epoch k is scores[k]."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.scores = scores

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(
    tmp_path: Path,
    scores: list[float],
    plugins: list | None = None,
    resume: Path | None = None,
    **best_args,
) -> tuple[ModelCheckpoint, LastCheckpoint]:
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    best = ModelCheckpoint(
        dirpath=tmp_path, filename="best-{epoch}", monitor="score", mode="max", **best_args
    )
    last = LastCheckpoint(
        dirpath=tmp_path, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=len(scores),
        callbacks=[best, last],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        plugins=plugins,
    )
    trainer.fit(Scripted(scores), data, data, ckpt_path=resume)
    return best, last


def _epoch(path: str | Path) -> int:
    return torch.load(path, weights_only=False)["epoch"]


def test_an_improving_last_epoch_links_instead_of_writing_twice(tmp_path):
    best, last = _fit(tmp_path, [0.1, 0.5, 0.9])
    best_file, last_file = Path(best.best_model_path), tmp_path / "last.ckpt"
    assert best_file.name == "best-epoch=2.ckpt" and last.last_model_path == ""
    assert os.stat(best_file).st_ino == os.stat(last_file).st_ino  # one file, two names
    assert _epoch(last_file) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch=2.ckpt", "last.ckpt"]


def test_a_worse_epoch_writes_last_without_touching_the_linked_best(tmp_path):
    # epoch 1 is the best (linked), epoch 2 is worse: last.ckpt must get epoch 2's state
    # in a file of its own while the best file keeps epoch 1's
    best, _ = _fit(tmp_path, [0.1, 0.9, 0.2])
    best_file, last_file = Path(best.best_model_path), tmp_path / "last.ckpt"
    assert os.stat(best_file).st_ino != os.stat(last_file).st_ino
    assert (_epoch(best_file), _epoch(last_file)) == (1, 2)


def test_where_links_fail_last_is_written(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError("links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    best, _ = _fit(tmp_path, [0.1, 0.5])
    last_file = tmp_path / "last.ckpt"
    assert os.stat(best.best_model_path).st_ino != os.stat(last_file).st_ino
    assert _epoch(last_file) == 1


@pytest.mark.parametrize("name", ["default", "quiet", "early_stopping"])
def test_every_callbacks_option_writes_last_with_it(compose, name):
    node = compose([f"callbacks={name}"]).callbacks.last_checkpoint
    assert node._target_ == "autotimm.training.callbacks.LastCheckpoint"


def test_local_checkpoint_io_writes_atomically(tmp_path, monkeypatch):
    from autotimm.training.checkpoint_io import LocalCheckpointIO

    io, path = LocalCheckpointIO(), tmp_path / "sub" / "best.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    assert io.load_checkpoint(path)["epoch"] == 1

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2}, path)
    assert io.load_checkpoint(path)["epoch"] == 1  # the old checkpoint is whole
    assert [p.name for p in path.parent.iterdir()] == ["best.ckpt"]  # no partial file left


def test_local_checkpoint_io_leaves_remote_paths_to_lightning():
    import fsspec

    from autotimm.training.checkpoint_io import LocalCheckpointIO, is_local

    assert is_local("/a/b.ckpt") and is_local("file:///a/b.ckpt")
    assert not is_local("s3://bucket/b.ckpt")
    io = LocalCheckpointIO()
    io.save_checkpoint({"epoch": 3}, "memory://autotimm-test/last.ckpt")  # fsspec's memory FS
    assert fsspec.filesystem("memory").exists("/autotimm-test/last.ckpt")
    assert io.load_checkpoint("memory://autotimm-test/last.ckpt")["epoch"] == 3


def test_every_trainer_option_uses_it(compose):
    for name in ("default", "cpu", "gpu", "ddp"):
        plugins = compose([f"trainer={name}"]).trainer.plugins
        assert [p._target_ for p in plugins] == [
            "autotimm.training.checkpoint_io.LocalCheckpointIO"
        ]


def _local_io() -> list:
    from autotimm.training.checkpoint_io import LocalCheckpointIO

    return [LocalCheckpointIO()]  # what train.py's trainer uses


def test_with_autotimms_checkpoint_io_the_link_and_the_later_write_keep_both_files_right(tmp_path):
    best, _ = _fit(tmp_path, [0.1, 0.9, 0.2], plugins=_local_io())
    best_file, last_file = Path(best.best_model_path), tmp_path / "last.ckpt"
    assert os.stat(best_file).st_ino != os.stat(last_file).st_ino
    assert (_epoch(best_file), _epoch(last_file)) == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch=1.ckpt", "last.ckpt"]


def test_a_run_resumes_from_a_linked_last_checkpoint(tmp_path):
    _fit(tmp_path, [0.1, 0.5], plugins=_local_io())  # epoch 1 improved: last.ckpt is a link
    last_file = tmp_path / "last.ckpt"
    assert os.stat(last_file).st_nlink == 2
    best, _ = _fit(tmp_path, [0.1, 0.5, 0.7], plugins=_local_io(), resume=last_file)
    assert (_epoch(best.best_model_path), _epoch(last_file)) == (2, 2)


def test_a_weights_only_best_file_is_never_linked_as_last(tmp_path):
    best, _ = _fit(tmp_path, [0.1, 0.5], plugins=_local_io(), save_weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert os.stat(best.best_model_path).st_ino != os.stat(tmp_path / "last.ckpt").st_ino
    assert "optimizer_states" in last and last["epoch"] == 1  # resumable


def test_a_failed_write_of_last_keeps_the_previous_last(tmp_path, monkeypatch):
    real_save = torch.save

    def last_fails_at_epoch_2(obj, f, *args, **kwargs):
        if "last" in str(f) and obj.get("epoch") == 2:
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", last_fails_at_epoch_2)
    with pytest.raises(OSError, match="disk full"):
        _fit(tmp_path, [0.1, 0.9, 0.2], plugins=_local_io())  # epoch 2: a real write of last
    monkeypatch.setattr(torch, "save", real_save)
    assert _epoch(tmp_path / "last.ckpt") == 1  # the linked epoch-1 state is still there
    assert _epoch(tmp_path / "best-epoch=1.ckpt") == 1
