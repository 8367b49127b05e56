"""`python -m autotimm.export`: every format runs, carries its metadata and matches PyTorch.

The CNN is the session's trained run (tests/helpers_inference.py); the ViT (slow) is a
checkpoint a library user writes with a Lightning Trainer. The timm folder is loaded in a
fresh interpreter where autotimm cannot be imported: timm and torch only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from autotimm.export import main
from tests.helpers_inference import trained_run


@pytest.fixture
def run(run_app, tmp_path):
    return trained_run(run_app, tmp_path)


def _real_batch(run, trained, n: int) -> torch.Tensor:
    """n held-out digits through the run's eval transform."""
    from autotimm.data.transforms import build_transform
    from autotimm.inference.images import ImageFiles

    paths = sorted(run.new_images.glob("*.png"))[:n]
    files = ImageFiles(paths, build_transform(trained.data_config, False), trained.in_chans)
    return torch.stack([files[i][0] for i in range(n)])


def test_onnx_has_free_batch_metadata_and_passes_parity(run, tmp_path, capsys):
    import onnxruntime as ort

    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.onnx_format import read_onnx_metadata

    out = tmp_path / "m.onnx"
    assert main([str(run.run_dir), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnx parity on a batch of 3: max |logit difference|" in printed and ": ok" in printed
    trained = load_trained(run.run_dir)
    meta = read_onnx_metadata(out)
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["input_size"] == [3, 32, 32] and meta["mean"] == list(trained.data_config["mean"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # batch sizes the export never saw
        images = _real_batch(run, trained, n)
        (logits,) = session.run(None, {"images": images.numpy()})
        assert torch.allclose(torch.from_numpy(logits), trained.model(images), atol=1e-4)


@pytest.mark.parametrize(("fmt", "name"), [("torchscript", "m.pt"), ("torch_export", "m.pt2")])
def test_torch_formats_pass_parity_and_carry_metadata(run, tmp_path, capsys, fmt, name):
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.torch_formats import read_metadata

    out = tmp_path / name
    assert main([str(run.run_dir), "--format", fmt, "--out", str(out)]) == 0
    assert f"{fmt} parity on a batch of 3" in capsys.readouterr().out
    trained = load_trained(run.run_dir)
    images = _real_batch(run, trained, 4)
    loaded = (
        torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
    )
    assert torch.allclose(loaded(images), trained.model(images), atol=1e-5)
    assert read_metadata(out)["class_names"] == trained.class_names


TIMM_ONLY = """
import json, sys
sys.modules["autotimm"] = None  # importing autotimm fails: timm alone must do
import timm, torch
from PIL import Image

folder, image = sys.argv[1], sys.argv[2]
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
config = timm.data.resolve_data_config(model=model)
transform = timm.data.create_transform(**config)
with torch.no_grad():
    logits = model(transform(Image.open(image).convert("RGB")).unsqueeze(0))
loaded = [m for m, v in sys.modules.items() if m.startswith("autotimm") and v]
print(json.dumps({"logits": logits[0].tolist(), "labels": model.pretrained_cfg["label_names"],
                  "classes": model.num_classes, "input_size": list(config["input_size"]),
                  "autotimm": loaded}))
"""


def test_timm_folder_loads_with_timm_alone_and_matches(run, tmp_path):
    from autotimm.inference.checkpoint import load_trained
    from autotimm.model.backbone import BackboneConfig, create_backbone

    folder = tmp_path / "timm_model"
    assert main([str(run.run_dir), "--format", "timm", "--out", str(folder)]) == 0
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    trained = load_trained(run.run_dir)
    image = sorted(run.new_images.glob("*.png"))[0]
    script = tmp_path / "timm_only.py"
    script.write_text(textwrap.dedent(TIMM_ONLY))
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(image)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["autotimm"] == [] and found["classes"] == 10
    assert found["labels"] == trained.class_names and found["input_size"] == [3, 32, 32]
    config = json.loads((folder / "config.json").read_text())
    assert config["multi_label"] is False and "softmax" in config["output"]
    expected = trained.model(_real_batch(run, trained, 1))[0]
    assert torch.allclose(torch.tensor(found["logits"]), expected, atol=1e-4)
    # the same weights as a new run's backbone (backbone.checkpoint_path=.../model.safetensors)
    reused = create_backbone(
        BackboneConfig("test_resnet", checkpoint_path=str(folder / "model.safetensors"))
    ).eval()
    images = _real_batch(run, trained, 2)
    assert torch.equal(reused(images), trained.model.backbone(images))


def test_parity_check_fails_on_a_model_that_computes_something_else(run):
    import copy

    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.parity import ParityError, check_batch, compare

    network = load_trained(run.run_dir).network()
    changed = copy.deepcopy(network)
    with torch.no_grad():
        changed[1].fc.bias[3] += 50.0  # class 3 wins everywhere
    images = check_batch((3, 32, 32))
    assert compare("onnx", network, copy.deepcopy(network), images).passed
    with pytest.raises(ParityError, match=r"max \|logit difference\| 5\.00e\+01 .*: FAILED"):
        compare("onnx", network, changed, images)


def test_bad_export_inputs_give_short_messages(run, tmp_path, capsys):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    assert main([str(tmp_path / "other.ckpt"), "--format", "onnx"]) == 1
    assert "is not an autotimm checkpoint" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--format", "timm"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(run.run_dir), "--format", "tflite"])
    assert "invalid choice: 'tflite' (choose from" in capsys.readouterr().err


def _library_checkpoint(tmp_path: Path, backbone: str) -> Path:
    """A checkpoint written the library way: ImageClassifier + ImageDataModule + Trainer."""
    import lightning as L

    from autotimm import ImageClassifier
    from autotimm.data import ImageDataModule

    data = ImageDataModule("digits", backbone=backbone, batch_size=16, limit=64)
    model = ImageClassifier(backbone, num_classes=10, metrics=[], class_names=data.class_names)
    trainer = L.Trainer(
        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    path = tmp_path / f"{backbone}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export", "timm"])
def test_vit_exports_pass_parity(tmp_path, capsys, fmt):
    checkpoint = _library_checkpoint(tmp_path, "test_vit")
    assert main([str(checkpoint), "--format", fmt, "--out", str(tmp_path / "vit")]) == 0
    printed = capsys.readouterr().out
    assert f"{fmt} parity on a batch of 3" in printed and ": ok" in printed


@pytest.mark.slow
def test_inference_benchmark_tiny_times_every_engine(monkeypatch, tmp_path):
    """benchmarks/inference.py --tiny: every engine timed, one JSON line last."""
    from tests.conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import inference

    result = inference.main(["--tiny", "--out", str(tmp_path)])
    for engine in ("eager", "torchscript", "torch_export", "onnxruntime"):
        assert result[engine]["latency_ms"] > 0 and result[engine]["img_s"] > 0
    assert json.loads((tmp_path / "results.jsonl").read_text()) == result


def test_outputs_probabilities_exports_softmax_and_bad_values_are_refused(run, tmp_path, capsys):
    from autotimm.inference.checkpoint import load_trained
    from autotimm.inference.torch_formats import read_metadata

    out = tmp_path / "probs.pt2"
    argv = [str(run.run_dir), "--format", "torch_export", "--out", str(out)]
    assert main([*argv, "--outputs", "probabilities"]) == 0
    trained = load_trained(run.run_dir)
    images = _real_batch(run, trained, 2)
    probs = torch.export.load(str(out)).module()(images)
    assert torch.allclose(probs, trained.model.predict_proba(images), atol=1e-5)
    assert (
        torch.allclose(probs.sum(-1), torch.ones(2))
        and "softmax applied" in (read_metadata(out)["output"])
    )
    with pytest.raises(SystemExit):  # argparse: the choices are listed
        main([*argv, "--outputs", "scores"])
    err = capsys.readouterr().err
    assert "invalid choice: 'scores'" in err and "logits" in err and "probabilities" in err
