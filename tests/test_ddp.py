"""DDP for one large run: `python train.py trainer=ddp trainer.accelerator=cpu
trainer.devices=2` trains with 2 real processes (gloo), and a sweep with trainer=ddp is
refused before it starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import FAST, TRAIN, run_dirs, run_train, train_env

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# real digits, 200 validation images: 100 per process, so no padding duplicates any
SMALL = [
    *FAST,
    "data.limit=200",
    "data.batch_size=32",
    "backbone.model_name=test_resnet",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
]


@pytest.mark.engines  # two processes training for real: about a minute on 2 cores
def test_ddp_run_trains_with_two_processes_and_one_record(tmp_path, compose):
    import lightning as L
    from helpers_library import read_metrics_csv
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, Subset

    from autotimm import ImageClassifier
    from autotimm.records.results import read_record

    done = run_train(tmp_path, *SMALL, *DDP)
    output = done.stdout + done.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output and "distributed_backend=gloo" in output
    (run_dir,) = run_dirs(tmp_path)  # one run directory, one results.json (rank zero's)
    assert len(list((tmp_path / "outputs").rglob("results.json"))) == 1
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second process ran here
    record = read_record(run_dir)
    assert record.status == "completed" and record.epochs == 3
    logged = read_metrics_csv(run_dir / "metrics.csv")
    best_row = [r for r in logged if r.get("val/loss") and int(r["epoch"]) == record.best_epoch]
    assert float(best_row[0]["val/loss"]) == pytest.approx(record.val["val/loss"])
    assert record.model is not None and record.model.params_m > 0  # measured once

    # the best checkpoint loads, and the logged val metrics are the ones reduced over
    # both processes: one process validating it on the whole val set gets the same
    model = ImageClassifier.load_from_checkpoint(record.best_model_path, weights_only=False)
    cfg = compose(SMALL)
    datamodule = instantiate(cfg.data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (single,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    assert single["val/accuracy"] == pytest.approx(record.val["val/accuracy"], abs=1e-6)
    assert single["val/loss"] == pytest.approx(record.val["val/loss"], rel=1e-4)
    # what rank zero alone saw (every second image) differs: the record is not one shard's
    datamodule.setup("validate")
    whole = datamodule.val_dataset  # normalised images (the loader's own dataset is uint8)
    shard = DataLoader(Subset(whole, range(0, len(whole), 2)), batch_size=32)
    (half,) = trainer.validate(model, dataloaders=shard, verbose=False)
    assert half["val/loss"] != pytest.approx(record.val["val/loss"], rel=1e-4)
    assert 0 < record.test["test/accuracy"] <= 1


def test_a_sweep_with_ddp_is_refused_before_it_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "+sweeps=quick", *DDP],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    message = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, message[-2000:]
    assert "trainer.strategy='ddp' trainer.devices=2: a sweep cannot train" in message
    assert "python train.py trainer=ddp" in message  # what to do instead
    assert "Traceback" not in message
    assert not (tmp_path / "outputs").exists()  # no sweep folder, no study, no trial


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["trainer=ddp"], True),
        (["trainer=gpu"], False),
        (["trainer=cpu", "trainer.devices=2"], True),
        (["trainer.devices=[0,1]"], True),
        (["trainer.devices=-1"], True),
        (["trainer.devices=auto"], False),
        ([], False),
    ],
)
def test_which_trainers_a_sweep_refuses(compose, overrides, refused):
    from autotimm.sweep.multirun_checks import check_one_process_per_trial
    from autotimm.user_errors import UserError

    cfg = compose(overrides)
    if refused:
        with pytest.raises(UserError, match="a sweep cannot train its trials with DDP"):
            check_one_process_per_trial(cfg)
    else:
        check_one_process_per_trial(cfg)
