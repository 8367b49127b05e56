"""MODEL_CARD.md: a run's card holds its results.json numbers and commands that work."""

from __future__ import annotations

import json
import shlex

import pytest

from autotimm.inference.model_card import CARD_FILE, copy_best_card, write_model_card
from tests.helpers_inference import trained_run


@pytest.fixture
def run(run_app, tmp_path):
    return trained_run(run_app, tmp_path)


def test_card_holds_the_runs_metrics_classes_recipe_and_cost(run):
    card = write_model_card(run.run_dir).read_text()
    results = json.loads((run.run_dir / "results.json").read_text())
    assert card.startswith("# Model card: test_resnet on image_folder")
    for section in ("val", "test"):
        assert results[section]
        for name, value in results[section].items():
            assert f"| {name} | {value:.4f} |" in card
    assert "- classes (10): 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in card
    assert "data.image_size=32" in card and "- optimizer: `adamw`" in card
    assert "- lr: `0.003`" in card and "- data.hflip: `0.0`" in card
    assert f"- parameters: {results['model']['params_m']} M" in card
    assert f"trained {results['epochs']} epoch(s)" in card


def test_the_cards_commands_run(run, tmp_path, capsys):
    from autotimm.export import main as export_main
    from autotimm.predict import main as predict_main

    card = write_model_card(run.run_dir).read_text()
    commands = [line for line in card.splitlines() if line.startswith("python -m autotimm.")]
    assert len(commands) == 5
    predict_args = shlex.split(commands[0])[3:]
    image = str(sorted(run.new_images.glob("*.png"))[0])
    predict_args = [image if a == "IMAGES_OR_FOLDERS..." else a for a in predict_args]
    out = tmp_path / "predictions.csv"
    assert predict_main([*predict_args[:-1], str(out)]) == 0 and out.is_file()
    export_args = shlex.split(commands[4])[3:]  # --format timm (the fastest)
    assert export_main([*export_args, "--out", str(tmp_path / "timm")]) == 0
    assert "timm parity" in capsys.readouterr().out


def test_sweep_folder_gets_the_best_trials_card(run, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "optimization_results.yaml").write_text(f"best_run_dir: {run.run_dir}\n")
    copied = copy_best_card(sweep)
    assert copied == sweep / CARD_FILE
    assert copied.read_text() == (run.run_dir / CARD_FILE).read_text()
    front = tmp_path / "front"
    front.mkdir()
    (front / "optimization_results.yaml").write_text("solutions: [{trial: 0, run_dir: /x}]\n")
    assert copy_best_card(front) is None and not (front / CARD_FILE).exists()


def test_every_completed_run_writes_its_card(run):
    assert run.card_at_end
