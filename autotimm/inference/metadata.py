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
        "output": "logits (N, num_classes); softmax gives class probabilities",
        "source_checkpoint": str(trained.checkpoint),
    }
