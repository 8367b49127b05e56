"""The preprocessing and labels an exported model carries with it (one dict, JSON-able)."""

from __future__ import annotations

from typing import Any

from autotimm.inference.checkpoint import TrainedModel


def export_metadata(trained: TrainedModel) -> dict[str, Any]:
    """What a user of the exported file needs to feed it and read its output."""
    config = trained.data_config
    return {
        "framework": "autotimm",
        "architecture": trained.backbone_name,
        "num_classes": len(trained.class_names),
        "class_names": list(trained.class_names),
        "input_size": [int(v) for v in config["input_size"]],
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "interpolation": str(config["interpolation"]),
        "crop_pct": float(config["crop_pct"]),
        "color_mode": "L" if trained.in_chans == 1 else "RGB",
        "preprocessing": (
            "resize the shorter side to input_size / crop_pct, centre crop input_size, "
            "scale pixels to [0, 1], subtract mean, divide by std (channels first)"
        ),
        **output_description(trained),
        "source_checkpoint": str(trained.checkpoint),
    }


def output_description(trained: TrainedModel) -> dict[str, Any]:
    """What the exported network outputs (logits as the PyTorch model, or probabilities with
    `--outputs probabilities`) and how to read it."""
    probabilities = trained.outputs == "probabilities"
    if not trained.multi_label:
        return {
            "multi_label": False,
            "outputs": trained.outputs,
            "output": "class probabilities (N, num_classes), softmax applied"
            if probabilities
            else "logits (N, num_classes); softmax gives class probabilities",
        }
    read = (
        "each label's probability (sigmoid applied)"
        if probabilities
        else ("one logit per label; sigmoid gives each label's probability")
    )
    return {
        "multi_label": True,
        "outputs": trained.outputs,
        "label_threshold": trained.label_threshold,
        "output": f"(N, num_classes): {read}, a label is predicted when its probability is "
        "above label_threshold",
    }
