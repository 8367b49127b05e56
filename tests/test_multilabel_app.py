"""Multi-label through the app (issue 12 §2): `data=csv data.multi_label=true` trains (in
this process), results.json counts labels, the checkpoint loads back multi-label, predict
writes per-label probabilities and export says multi-label; bad combinations refused."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.conftest import FAST
from tests.helpers_multilabel import LABELS, write_digits_multilabel

SMALL = [
    *FAST,
    "data=csv",
    "data.csv_file=labels.csv",
    "data.multi_label=true",
    "backbone.model_name=test_resnet",
    "data.image_size=32",
    "data.hflip=0.0",
    "data.batch_size=32",
    "optimizer.lr=0.003",
    "measure_cost=false",
]


def test_trains_records_labels_and_predicts_per_label(run_app, tmp_path, capsys):
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.torch_formats import export_torchscript, read_metadata
    from autotimm.predict import main as predict_main

    csv_path = write_digits_multilabel(tmp_path / "ml", 160)
    run = run_app(*SMALL, f"data.root={csv_path.parent}", "trainer.max_epochs=1")
    assert run.code == 0, run.output[-3000:]
    results = run.results()
    assert results["num_classes"] == len(LABELS) == 13  # labels, not label combinations
    assert {"val/accuracy", "val/f1_macro", "val/auroc"} <= set(results["val"])
    assert "val/top5" not in results["val"]  # top-k means nothing with several labels
    trained = load_trained(run.run_dir)
    assert trained.multi_label and trained.class_names == LABELS
    assert trained.model.criterion.__class__.__name__ == "MultiLabelLoss"

    out = tmp_path / "predictions.csv"
    images = [str(p) for p in sorted((csv_path.parent / "images").glob("*.png"))[:6]]
    assert predict_main([str(run.run_dir), *images, "--out", str(out), "--workers", "0"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and list(rows[0]) == ["path", "labels"] + [f"prob_{n}" for n in LABELS]
    first = rows[0]
    over = [n for n in LABELS if float(first[f"prob_{n}"]) > 0.5]
    assert first["labels"].split() == over
    json_out = tmp_path / "p.json"
    assert predict_main([str(run.run_dir), *images, "--out", str(json_out), "--threshold",
                         "0.01", "--workers", "0", "--tta"]) == 0  # fmt: skip
    row = json.loads(json_out.read_text())[0]
    assert set(row) == {"path", "labels", "probabilities"} and len(row["probabilities"]) == 13
    assert row["labels"] == [n for n, p in row["probabilities"].items() if p > 0.01]
    assert all(0 < p < 1 for p in row["probabilities"].values())  # sigmoids, TTA-averaged
    capsys.readouterr()
    assert predict_main([str(run.run_dir), *images, "--top-k", "3"]) == 1
    error = capsys.readouterr().err
    assert "--top-k 3:" in error and "is a multi-label model" in error and "--threshold" in error

    report = export_torchscript(trained, tmp_path / "model.pt")
    assert report.passed
    metadata = read_metadata(tmp_path / "model.pt")
    assert metadata["multi_label"] is True and metadata["label_threshold"] == 0.5
    assert "sigmoid" in metadata["output"]
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    batch = torch.randn(2, *trained.data_config["input_size"])
    with torch.no_grad():
        assert torch.allclose(scripted(batch).sigmoid(), trained.model.predict_proba(batch))
    # --outputs probabilities: the exported model gives the per-label probabilities itself
    from autotimm.export import export
    from autotimm.user_errors import UserError

    path, report = export(run.run_dir, "torchscript", tmp_path / "p.pt", outputs="probabilities")
    assert report.passed and read_metadata(path)["outputs"] == "probabilities"
    with torch.no_grad():
        assert torch.allclose(
            torch.jit.load(str(path))(batch), trained.model.predict_proba(batch), atol=1e-5
        )
    with pytest.raises(UserError, match="--outputs probabilities with --format timm"):
        export(run.run_dir, "timm", tmp_path / "t", outputs="probabilities")
    # timm's own folder: timm loads it as usual, config.json says how to read the logits
    from autotimm.inference.timm_format import export_timm

    assert export_timm(trained, tmp_path / "timm_model").passed
    config = json.loads((tmp_path / "timm_model" / "config.json").read_text())
    assert config["multi_label"] is True and config["label_threshold"] == 0.5
    assert "sigmoid" in config["output"] and config["label_names"] == LABELS
    card = (run.run_dir / "MODEL_CARD.md").read_text()
    assert "- labels (13):" in card and "task: multi-label" in card


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=image_folder", "data.root=."], "data.multi_label=True: source 'image_folder'"),
        (["data=digits"], "accepted sources for multi-label data: ['csv']"),
        (["data.class_weights=auto"], "data.class_weights='auto': does not work with data.multi"),
        (["data.sampler=balanced"], "data.sampler='balanced': does not work with data.multi"),
        (["model.label_threshold=2"], "label_threshold=2: must be a probability in (0, 1)"),
        (["model.label_threshold=[0.5,0.5]"], "has 2 entries, the model has 13 labels"),
        # top-k means nothing multi-label (left out): refused before training, not after
        (["optimized_metric=val/top5"], "optimized_metric='val/top5': the model logs no such"),
    ],
)
def test_bad_combinations_give_one_short_message(run_app, tmp_path, overrides, expected):
    data = []
    if not overrides[0].startswith("data="):  # the CSV of real multi-label digits
        root = write_digits_multilabel(tmp_path / "ml", 20).parent
        data = ["data=csv", f"data.root={root}", "data.csv_file=labels.csv"]
    run = run_app(*FAST, *data, "data.multi_label=true", *overrides)
    assert run.code == 1 and expected in run.output, run.output[-2000:]


def test_a_multi_label_model_on_single_label_data_is_refused(run_app):
    run = run_app(*FAST, "model.multi_label=true", "data.limit=50", "trainer.max_epochs=1")
    assert run.code == 1
    assert "model.multi_label=True but data.multi_label=False" in run.output, run.output[-2000:]
