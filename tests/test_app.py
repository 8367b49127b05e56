"""The experiment app: every config option instantiates; train.py runs end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import FAST, ROOT, latest_results, run_dirs, run_train

GROUPS = [
    "backbone",
    "optimizer",
    "scheduler",
    "metrics",
    "regularization",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in _options(group)]


def test_config_tree_has_the_documented_options():
    assert {"resnet18", "resnet50", "vit_b16", "vit_s16", "convnext_tiny"} <= set(
        _options("backbone")
    )
    assert {"efficientnet_b0", "mobilenetv3_large_100"} <= set(_options("backbone"))
    from autotimm import list_optimizers, list_schedulers

    assert set(_options("optimizer")) == set(list_optimizers())
    assert set(_options("scheduler")) == set(list_schedulers())
    assert {"none", "light", "strong"} <= set(_options("regularization"))
    assert {"digits", "fashion_mnist", "cifar10", "cifar100", "image_folder", "csv"} <= set(
        _options("data")
    )
    assert {"cpu", "gpu", "ddp"} <= set(_options("trainer"))
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert path.read_text().lstrip().startswith("#"), f"{path} has no leading comment"


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_instantiates(compose, tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if option in ("image_folder", "csv"):
        overrides.append(f"data.root={tmp_path}")
    if group == "trainer" and option in ("gpu", "ddp"):
        # no GPU on the test machines: check the preset composes, build it for the CPU
        overrides += ["trainer.accelerator=cpu", "trainer.devices=1"]
        overrides += ["trainer.strategy=auto"] if option == "ddp" else []
    cfg = compose(overrides)
    if group in ("logger", "callbacks"):
        built = [instantiate(node) for node in cfg[group].values() if node is not None]
        assert built and all(
            type(b).__module__.startswith(("lightning", "autotimm")) for b in built
        )
    elif group in ("experiment", "debug"):
        model = instantiate(cfg.model, num_classes=10)
        assert model.head.fc.out_features == 10
    elif group == "trainer":
        trainer = instantiate(cfg.trainer, logger=False)
        assert type(trainer).__name__ == "Trainer"
    else:
        built = instantiate(cfg[group])
        assert built is not None
        if group == "backbone":
            from autotimm.model.backbone import create_backbone

            assert create_backbone(built).num_features > 0
        if group == "metrics":
            assert all(type(m).__name__ == "MetricConfig" for m in built)


def test_model_is_one_instantiation_of_the_composed_groups(compose):
    cfg = compose(
        [
            "backbone=vit_s16",
            "optimizer=lamb",
            "scheduler=step",
            "regularization=light",
            "regularization.mixup_alpha=0.3",
            "backbone.drop_path_rate=0.2",
        ]
    )
    model = instantiate(cfg.model, num_classes=7)
    assert model.hparams.optimizer == "lamb"
    assert model.hparams.scheduler == "step"
    assert model.hparams.mixup_alpha == 0.3
    assert model.hparams.label_smoothing == 0.1
    assert model.hparams.backbone["model_name"] == "vit_small_patch16_224"
    assert model.hparams.backbone["drop_path_rate"] == 0.2
    assert model.head.fc.out_features == 7


def test_help_lists_groups_and_cfg_job_prints_config(tmp_path, train_help):
    help_text = train_help
    for group in ("backbone:", "optimizer:", "scheduler:", "data:", "regularization:"):
        assert group in help_text
    assert "vit_b16" in help_text and "lamb" in help_text
    job = run_train(tmp_path, "--cfg", "job", "backbone=vit_b16").stdout
    assert "model_name: vit_base_patch16_224" in job


def test_backbone_optimizer_scheduler_combinations_run(tmp_path):
    # One Hydra multirun (basic launcher, one process) over backbone x optimizer: a ViT and
    # a CNN (the small ViT: a base one at 224x224 takes many seconds per batch on a CPU).
    # The model's cost is measured in other tests (here: a batch of 32 ViT images).
    proc = run_train(
        tmp_path,
        "-m",
        "debug=fast_dev_run",
        *FAST,
        "measure_cost=false",
        "backbone=vit_s16,resnet18",
        "optimizer=lamb,sgd",
        "scheduler=cosine_with_restarts",
        "data.batch_size=2",  # each ViT step at 224x224 is most of the time
    )
    results = sorted((tmp_path / "outputs" / "sweeps").glob("*/*/*/results.json"))
    assert len(results) == 4, proc.stdout[-2000:]
    seen = set()
    for path in results:
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        seen.add(tuple(sorted(o for o in record["overrides"] if o.startswith(("backbone", "opt")))))
    assert ("backbone=vit_s16", "optimizer=lamb") in seen
    assert len(seen) == 4


def test_vit_trains_at_its_own_input_size_on_digits(compose):
    cfg = compose(["backbone=vit_b16"])
    datamodule = instantiate(cfg.data)
    assert datamodule.data_config["input_size"] == (3, 224, 224)
    cfg = compose(["backbone=resnet18"])
    assert instantiate(cfg.data).data_config["input_size"] == (3, 32, 32)


def _read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


SHORT = [
    *FAST,
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture(scope="module")
def trained_proc(real_run) -> tuple[Path, subprocess.CompletedProcess]:
    """The suite's real `python train.py` run (conftest.real_run), read by several tests: 2
    epochs of 3 batches on digits, CSV and offline W&B (logger=default), warnings shown.
    Returns its folder and the finished process (its printed output)."""
    return real_run.folder, real_run.proc


@pytest.fixture(scope="module")
def trained_run(trained_proc) -> tuple[Path, dict]:
    """trained_proc's run directory and record."""
    tmp_path, _ = trained_proc
    assert len(run_dirs(tmp_path)) == 1
    return latest_results(tmp_path)


def test_a_run_prints_no_notice_about_its_own_loggers(trained_proc):
    """`make train`'s first run printed two notices a new user must wonder about, both
    about nothing the user did: Lightning's "Experiment logs directory ... exists and is
    not empty. Previous log files ... will be deleted" (the CSV logger's directory is the
    run directory, where Hydra has written .hydra/ and train.log already) and W&B's "The
    anonymous setting has no effect" (Lightning's WandbLogger passes anonymous=None to
    every wandb.init). conf/logger builds autotimm.app.loggers' two loggers instead."""
    _, proc = trained_proc
    printed = " ".join((proc.stdout + proc.stderr).split())
    assert "Tracking run with wandb" in printed  # W&B was heard: its notices would be here
    assert "exists and is not empty" not in printed
    assert "Previous log files" not in printed
    assert "anonymous setting" not in printed


def test_results_json_of_a_run(trained_run):
    first_dir, first = trained_run
    for key in (
        "objective",
        "best_model_path",
        "val",
        "test",
        "epochs",
        "wall_time_s",
        "train_images_per_s",
        "device",
        "overrides",
        "model",
    ):
        assert key in first, key
    assert first["objective"]["name"] == "val/accuracy"
    assert first["objective"]["value"] == first["val"]["val/accuracy"]
    assert 0.0 <= first["objective"]["value"] <= 1.0
    assert first["epochs"] == 2 and first["device"] == "cpu"
    assert Path(first["best_model_path"]).is_file()
    assert (first_dir / "checkpoints" / "last.ckpt").is_file()
    assert (first_dir / ".hydra" / "config.yaml").is_file()
    assert "test/accuracy" in first["test"]
    assert "trainer.max_epochs=2" in first["overrides"]
    assert first["model"]["params_m"] > 0  # the model's cost, measured after training


def test_resume_from_last_checkpoint(trained_run, run_app):
    first_dir, _ = trained_run
    last = first_dir / "checkpoints" / "last.ckpt"
    every_step = "trainer.log_every_n_steps=1"
    app = run_app(*SHORT, "trainer.max_epochs=3", every_step, f"ckpt_path={last}")
    assert app.code == 0, app.output[-3000:]
    second = app.results()
    assert app.run_dir != first_dir and second["status"] == "completed"
    assert second["epochs"] == 3
    assert second["global_step"] == 9  # 3 epochs x 3 batches: continued, not restarted
    rows = _read_metrics(app.run_dir)
    val_epochs = {int(row["epoch"]) for row in rows if row.get("val/loss")}
    # Lightning closes the checkpoint's epoch (1) with a validation pass, then trains epoch 2
    assert "0" not in {row["epoch"] for row in rows}
    assert max(val_epochs) == 2
    # the cosine planned for 6 steps is re-sized to 9 (autotimm.optim.resizing_schedulers):
    # never climbing back up, the last step at the lr of the plan's last step (lr 1e-3, step 5 of 6)
    lrs = [float(row["train/lr"]) for row in rows if row.get("train/lr")]
    assert lrs and all(b <= a * (1 + 1e-6) for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    assert lrs[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6)), rel=1e-5)


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_parallel_runs_get_their_own_directories(tmp_path):
    """8 runs started at once resolve 8 different run directories."""
    from tests.conftest import TRAIN, train_env

    env = train_env(tmp_path)
    started = [
        subprocess.Popen(
            [
                str(Path(__import__("sys").executable)),
                str(TRAIN),
                "--cfg",
                "all",
                "--resolve",
                "--package",
                "hydra.run",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    dirs = set()
    for proc in started:
        out, _ = proc.communicate(timeout=120)
        line = next(x for x in out.splitlines() if x.strip().startswith("dir:"))
        dirs.add(line.split("dir:", 1)[1].strip())
    assert len(dirs) == 8
    assert all(d.startswith(str(tmp_path / "outputs" / "runs")) for d in dirs)


def test_wandb_offline_record_has_config_and_summary(trained_run):
    run_dir, results = trained_run
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    wandb_bin = Path(__import__("sys").executable).parent / "wandb"
    out = subprocess.run(
        [str(wandb_bin), "leet", "inspect", "--summary", "--json", str(wandb_runs[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    record = json.loads(out.stdout)
    config = record["config"]
    assert config["backbone"]["model_name"] == "resnet18"
    assert config["optimizer"]["name"] == "adamw"
    summary = record["summary"]
    assert summary["objective"] == pytest.approx(results["objective"]["value"])
    assert summary["test/accuracy"] == pytest.approx(results["test"]["test/accuracy"])
    assert record["exit_code"] == 0
    assert set(record["tags"]) == {"digits", "smoke"}
    images = wandb_runs[0] / "files" / "media" / "images" / "val"
    assert list(images.glob("confusion_matrix_*.png"))


@pytest.mark.slow
def test_default_digits_run_reaches_its_accuracy(tmp_path):
    """`make train`'s run: resnet18 on digits reaches >= 0.97 test accuracy."""
    run_train(tmp_path, "print_config=false", timeout=900)
    _, results = latest_results(tmp_path)
    assert results["test"]["test/accuracy"] >= 0.97
    assert len(run_dirs(tmp_path)) == 1


def _write_image_folder(root: Path, per_class: int = 6) -> None:
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for index, name in enumerate(["cat", "dog", "owl"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype="uint8")
            pixels[..., index] = 255  # a class signal
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")


def test_image_folder_trains_through_the_app(run_app, tmp_path):
    images = tmp_path / "images"
    _write_image_folder(images)
    quick = [*FAST, "trainer.max_epochs=1", "data.batch_size=4", "data.image_size=32"]
    app = run_app(*quick, "data=image_folder", f"data.root={images}")
    assert app.code == 0, app.output[-3000:]
    results = app.results()
    assert results["num_classes"] == 3 and results["status"] == "completed"
    import torch

    checkpoint = torch.load(results["best_model_path"], map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == ["cat", "dog", "owl"]


def test_fashion_mnist_trains_through_the_app(run_app):
    quick = [*FAST, "trainer.max_epochs=1", "data.image_size=32"]
    app = run_app(*quick, "data=fashion_mnist", "data.limit=120", "data.batch_size=16")
    assert app.code == 0, app.output[-3000:]
    results = app.results()
    assert results["num_classes"] == 10 and results["status"] == "completed"


BAD_INPUTS = {
    "unknown-group-option": (["backbone=resnet999"], ["backbone/resnet999", "resnet18"]),
    "unknown-key": (["foo=1"], ["foo"]),
    "missing-root": (["data=image_folder", "data.root=/does/not/exist"], ["/does/not/exist"]),
    "no-root": (["data=image_folder"], ["data.root"]),
    "num-classes-mismatch": (["data=synthetic", "model.num_classes=5"], ["5", "10"]),
    "unknown-optimizer": (["optimizer.name=adamx"], ["adamx", "lamb"]),
    "unknown-backbone-name": (["backbone.model_name=resnet181"], ["resnet181", "resnet18"]),
    "bad-label-smoothing": (["regularization.label_smoothing=1.5"], ["label_smoothing", "1.5"]),
    "pretrained-offline": (
        ["data=synthetic", "backbone.pretrained=true"],
        ["offline", "checkpoint_path", "pretrained=false"],
    ),
}


# one real `python train.py` per kind of error, the rest in this process through the same
# app (see conftest.run_app): Hydra's composition errors here; autotimm's own (a config
# value, checked before the data) in
# test_config_validation.py::test_train_py_reports_the_config_error_not_the_data_error
# (missing-root, a data error of the same app, runs in this process: a real run of it was
# a second interpreter start-up for the same wrapper and the same one-line message)
BAD_INPUTS_IN_A_SUBPROCESS = {"unknown-group-option"}


def _assert_nothing_trained(folder: Path) -> None:
    """At most a results.json that records the failure, and no checkpoint."""
    for path in folder.rglob("results.json"):
        assert json.loads(path.read_text())["status"] == "failed"
    assert not list(folder.rglob("*.ckpt"))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS_IN_A_SUBPROCESS))
def test_bad_input_gives_a_short_clear_error(tmp_path, case):
    overrides, expected = BAD_INPUTS[case]
    proc = run_train(tmp_path, "print_config=false", "logger=csv", *overrides, check=False)
    assert proc.returncode != 0
    err = " ".join((proc.stderr + proc.stdout).split())  # rich wraps long lines
    for text in expected:
        assert text in err, f"{text!r} not in: {err[-1500:]}"
    assert "Traceback" not in proc.stderr
    _assert_nothing_trained(tmp_path)


@pytest.mark.parametrize("case", sorted(set(BAD_INPUTS) - BAD_INPUTS_IN_A_SUBPROCESS))
def test_bad_input_gives_a_short_clear_error_in_process(run_app, tmp_path, case):
    """The same app as train.py: exits 1 with the message (another exception would be a
    traceback)."""
    overrides, expected = BAD_INPUTS[case]
    app = run_app("print_config=false", "logger=csv", *overrides)
    assert app.code == 1
    for text in expected:
        assert text in app.output, f"{text!r} not in: {app.output[-1500:]}"
    _assert_nothing_trained(tmp_path)


def test_empty_and_corrupt_image_folders_are_named(run_app, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    app = run_app("print_config=false", "data=image_folder", f"data.root={empty}", name="e")
    assert app.code == 1 and str(empty) in app.output
    images = tmp_path / "images"
    _write_image_folder(images)
    (images / "cat" / "broken.jpg").write_bytes(b"not an image")
    app = run_app("print_config=false", "data=image_folder", f"data.root={images}", name="c")
    assert app.code == 1 and "broken.jpg" in app.output
