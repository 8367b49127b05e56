"""The `compile` switch and the other fast defaults of autotimm.app.run, on the CPU.

In-place ``model.compile()`` (what ``compile=true`` does) keeps state_dict keys free of the
``_orig_mod.`` prefix, so a checkpoint written by a compiled model loads into a plain one
and the other way round, with identical outputs. The fast tests compile with the "eager"
backend (same wrapping, no C++ build); the slow one runs train.py with ``compile=true``
(TorchInductor, minutes on a cold cache).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import FAST, latest_results, run_train
from torch.utils.data import DataLoader, TensorDataset

from autotimm import ImageClassifier
from autotimm.app.compose import prepare_model, uses_cuda


def tiny_model(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier("test_resnet", num_classes=3, metrics=[], scheduler=None)


def fit_two_steps(model: ImageClassifier, tmp_path) -> str:
    """Two training steps on a fixed batch; returns the checkpoint written afterwards."""
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(data, batch_size=4))
    path = str(tmp_path / "model.ckpt")
    trainer.save_checkpoint(path)
    return path


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_compiled_checkpoint_loads_into_plain_model_and_back(tmp_path):
    x = torch.randn(2, 3, 32, 32)
    compiled = tiny_model()
    compiled.compile(backend="eager")  # in place, like autotimm.app.compose.prepare_model
    path = fit_two_steps(compiled, tmp_path)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)
    plain = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    assert plain._compiled_call_impl is None
    torch.testing.assert_close(outputs(plain, x), outputs(compiled, x), rtol=0, atol=0)

    # the other way: a plain checkpoint into a model that is compiled afterwards
    plain_trained = tiny_model(seed=3)
    path = fit_two_steps(plain_trained, tmp_path)
    loaded = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    loaded.compile(backend="eager")
    torch.testing.assert_close(outputs(loaded, x), outputs(plain_trained, x), rtol=0, atol=0)
    # and plain state dicts move both ways with strict key matching
    loaded.load_state_dict(compiled.state_dict(), strict=True)
    torch.testing.assert_close(outputs(loaded, x), outputs(compiled, x), rtol=0, atol=0)


def test_prepare_model_compiles_in_place_and_keeps_cpu_layout(compose):
    cfg = compose(["compile=true", "compile_mode=default", "trainer.accelerator=cpu"])
    model = tiny_model()
    keys = list(model.state_dict())
    prepared = prepare_model(model, cfg)
    assert prepared is model and model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys
    assert not uses_cuda(cfg)
    # channels_last only where the model trains on CUDA
    assert all(p.is_contiguous() for p in model.parameters() if p.ndim == 4)

    plain = prepare_model(tiny_model(), compose(["trainer.accelerator=cpu"]))
    assert plain._compiled_call_impl is None


def test_fast_defaults_are_in_the_config(compose):
    cfg = compose([])
    assert cfg.compile is False and cfg.compile_mode == "default"
    assert cfg.channels_last is True and cfg.tune_batch_size is False
    assert cfg.data.decode == "auto" and cfg.data.channels_last is True


def test_tune_batch_size_runs_the_finder(run_app):
    """Through the app (in this process): 4 and 8 train, 16 is the whole training set."""
    app = run_app(
        *FAST,
        "tune_batch_size=true",
        "data=synthetic",
        "data.synthetic_size=24",
        "data.batch_size=4",
        "backbone.model_name=test_resnet",
        "metrics=minimal",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "test=false",
    )
    assert app.code == 0, app.output[-3000:]
    results = app.results()
    assert results["batch_size"] > 4 and results["global_step"] >= 1


@pytest.mark.slow
def test_train_py_compile_true_checkpoint_round_trip(tmp_path):
    """compile=true through train.py (TorchInductor); its checkpoints load either way."""
    run_train(
        tmp_path,
        *FAST,
        "compile=true",
        "data=synthetic",
        "data.synthetic_size=40",
        "data.batch_size=4",
        "backbone.model_name=test_resnet",
        "metrics=minimal",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        timeout=1200,
    )
    run_dir, results = latest_results(tmp_path)
    assert results["compile"] is True
    path = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    x = torch.randn(2, 3, 32, 32)
    plain = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    compiled = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    compiled.compile()
    torch.testing.assert_close(outputs(compiled, x), outputs(plain, x), rtol=1e-4, atol=1e-4)
