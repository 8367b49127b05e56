"""`python -m autotimm.predict`: a real trained run labels held-out digit images.

The run (timm test_resnet, 32 px, 3 epochs on sklearn's digits written as PNG files) is
trained once per session (tests/helpers_inference.py); its held-out images carry their
true label in the file name.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from autotimm.predict import main, predict
from tests.helpers_inference import accuracy, label_of, trained_run


@pytest.fixture
def run(run_app, tmp_path):
    return trained_run(run_app, tmp_path)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_labels_most_held_out_digits_right(run, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    assert main([str(run.run_dir), str(run.new_images), "--out", str(out), "--top-k", "3"]) == 0
    rows = _rows(out)
    files = sorted(str(p) for p in run.new_images.glob("*.png"))
    assert sorted(r["path"] for r in rows) == files  # one row per image, nothing else
    assert list(rows[0]) == ["path", "label", "probability"] + [
        f"top{i}_{c}" for i in (1, 2, 3) for c in ("label", "probability")
    ]
    assert {r["label"] for r in rows} <= {str(d) for d in range(10)}
    right = sum(r["label"] == label_of(r["path"]) for r in rows) / len(rows)
    assert right > 0.85, right
    for r in rows:
        probs = [float(r[f"top{i}_probability"]) for i in (1, 2, 3)]
        assert r["top1_label"] == r["label"] and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0001
    printed = capsys.readouterr().out
    assert f"{len(files)} image(s) labelled -> {out}" in printed
    top_class, top_count = printed.splitlines()[1].split()
    assert top_count == str(sum(r["label"] == top_class for r in rows))


def test_eval_transform_is_the_runs_own(run):
    """The checkpoint alone rebuilds the exact tensors the run's test loader gave."""
    from autotimm.data import ImageDataModule
    from autotimm.data.datasets import file_items
    from autotimm.data.transforms import build_transform
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.images import ImageFiles

    trained = load_trained(run.checkpoint)
    datamodule = ImageDataModule(**trained.data_hparams)
    test_set = datamodule.test_dataset
    paths, _ = file_items(test_set.base)
    ours = ImageFiles(paths[:4], build_transform(trained.data_config, False), trained.in_chans)
    for i in range(4):
        assert torch.equal(ours[i][0], test_set[i][0])
    assert trained.class_names == datamodule.class_names


def test_checkpoint_run_dir_and_sweep_dir_name_the_same_model(run, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "optimization_results.yaml").write_text(f"best_run_dir: {run.run_dir}\n")
    moved = tmp_path / "copied_sweep" / "0"  # a sweep folder without its summary, moved
    shutil.copytree(run.run_dir, moved)
    images = sorted(run.new_images.glob("*.png"))[:20]
    results = [
        predict(model, images, out=tmp_path / f"p{i}.json", top_k=2).rows
        for i, model in enumerate([run.checkpoint, run.run_dir, sweep, moved.parent])
    ]
    assert all(rows == results[0] for rows in results[1:])
    written = json.loads((tmp_path / "p0.json").read_text())
    assert [w["path"] for w in written] == [str(p) for p in images]
    assert len(written[0]["top_k"]) == 2 and written[0]["label"] == written[0]["top_k"][0]["label"]


def test_tta_is_deterministic_keeps_shapes_and_is_measured(run):
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.images import collect_images
    from autotimm.inference.tta import plan_for
    from autotimm.predict import predict_images

    trained = load_trained(run.run_dir)
    paths = collect_images([run.new_images])
    plain = predict_images(trained, paths, top_k=10)
    tta = predict_images(trained, paths, top_k=10, tta=True)
    again = predict_images(trained, paths, top_k=10, tta=True)
    assert tta.rows == again.rows and len(tta.rows) == len(plain.rows) == len(paths)
    assert tta.rows != plain.rows  # the views changed the probabilities
    assert tta.tta is not None and not tta.tta.hflip  # trained without flips: no mirrors
    before, after = accuracy(plain.rows), accuracy(tta.rows)
    print(f"TTA on {len(paths)} held-out digits: {before:.3f} -> {after:.3f}")
    assert after >= before - 0.03
    assert plan_for({"hflip": 0.5}).num_views == 4 and plan_for({}).num_views == 2


def _write_odd_inputs(folder: Path, digit: Path) -> tuple[list[Path], list[Path]]:
    """Readable files in other modes/sizes/formats, and two broken ones."""
    folder.mkdir()
    gray = Image.open(digit)
    good = [folder / "rgb_big.jpg", folder / "rgba.png", folder / "sub" / "small.webp"]
    gray.convert("RGB").resize((80, 60)).save(good[0])
    gray.convert("RGBA").save(good[1])
    good[2].parent.mkdir()
    gray.resize((6, 6)).save(good[2])
    bad = [folder / "broken.png", folder / "empty.jpg"]
    bad[0].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad[1].write_bytes(b"")
    return good, bad


def test_any_image_kind_csv_lists_and_unreadable_files(run, tmp_path, capsys):
    digit = sorted(run.new_images.glob("*.png"))[0]
    good, bad = _write_odd_inputs(tmp_path / "odd", digit)
    listing = tmp_path / "list.csv"
    listing.write_text("file,note\n" + "".join(f"odd/{p.name},x\n" for p in good[:2] + bad))
    out = tmp_path / "p.csv"
    args = [str(run.run_dir), str(tmp_path / "odd"), "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert sorted(r["path"] for r in _rows(out)) == sorted(map(str, good))
    assert all(str(p) in captured.err for p in bad) and "skipped 2 unreadable" in captured.out
    code = main([str(run.run_dir), str(listing), "--path-column", "file", "--out", str(out)])
    assert code == 0 and len(_rows(out)) == 2
    before = out.read_text()
    assert main([*args, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "--strict" in err and "broken.png" in err
    assert out.read_text() == before  # a failed run leaves the earlier output alone


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_model", "does not exist; give a checkpoint file (.ckpt), a run directory"),
        ("foreign_checkpoint", "is not an autotimm checkpoint: it has no ImageClassifier"),
        ("text_checkpoint", "is not an autotimm checkpoint (torch.load failed"),
        ("empty_folder", "is a folder without runs"),
        ("missing_input", "does not exist; INPUTS are image files"),
        ("no_images", "no images found in"),
        ("bad_device", "--device 'tpu'"),
        ("csv_column", "has no column 'path' (columns: ['file'])"),
    ],
)
def test_bad_input_gives_one_short_message(run, tmp_path, capsys, case, expected):
    model, inputs, extra = str(run.run_dir), [str(run.new_images)], []
    if case == "missing_model":
        model = str(tmp_path / "nowhere.ckpt")
    elif case == "foreign_checkpoint":
        model = str(tmp_path / "other.ckpt")
        torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, model)
    elif case == "text_checkpoint":
        model = str(tmp_path / "notes.ckpt")
        Path(model).write_text("not a checkpoint")
    elif case == "empty_folder":
        model = str(tmp_path)
    elif case == "missing_input":
        inputs = [str(tmp_path / "no_such_folder")]
    elif case == "no_images":
        inputs = [str(tmp_path)]
    elif case == "bad_device":
        extra = ["--device", "tpu"]
    else:
        (tmp_path / "l.csv").write_text("file\na.png\n")
        inputs = [str(tmp_path / "l.csv")]
    assert main([model, *inputs, "--out", str(tmp_path / "o.csv"), *extra]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_tta_effect_on_fashion_mnist(run_app, tmp_path):
    """The README's TTA numbers: a run trained with flips, 1,000 official test images."""
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.images import collect_images
    from autotimm.predict import predict_images
    from tests.conftest import FAST
    from tests.helpers_inference import write_fashion

    new = write_fashion(tmp_path / "fashion", n_train=4000, n_new=1000)
    quick = [*FAST, "data=image_folder", "backbone.model_name=test_resnet", "data.image_size=32"]
    app = run_app(*quick, f"data.root={tmp_path / 'fashion' / 'train'}", "trainer.max_epochs=8")
    assert app.code == 0, app.output[-3000:]
    trained = load_trained(app.run_dir)
    paths = collect_images([new])
    plain = accuracy(predict_images(trained, paths).rows)
    tta = predict_images(trained, paths, tta=True)
    assert tta.tta is not None and tta.tta.hflip  # trained with flips: mirrors are views
    print(
        json.dumps(
            {
                "tta_fashion_mnist": {
                    "images": len(paths),
                    "plain": plain,
                    "tta": accuracy(tta.rows),
                    "views": tta.tta.num_views,
                }
            }
        )
    )
    assert accuracy(tta.rows) >= plain - 0.01
