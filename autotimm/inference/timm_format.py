"""timm's own pretrained layout: `config.json` + `model.safetensors`, one timm model.

The trained backbone and head become a plain timm classifier (`num_classes` outputs,
its own classifier layer holding the head's weights), so that
`timm.create_model("local-dir:<folder>", pretrained=True)` builds it without autotimm.
The same folder's `model.safetensors` is a `backbone.checkpoint_path` for a new run
(timm drops the classifier weights when the class count differs).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

from autotimm.inference.checkpoint import TrainedModel
from autotimm.inference.metadata import output_description
from autotimm.inference.parity import DEFAULT_ATOL, ParityReport, check_batch, compare
from autotimm.user_errors import UserError


def timm_classifier(trained: TrainedModel) -> nn.Module:
    """One timm model with the trained backbone weights and the head as its classifier."""
    backbone = trained.hparams["backbone"]
    model = timm.create_model(
        backbone["model_name"],
        pretrained=False,
        num_classes=len(trained.class_names),
        in_chans=int(backbone.get("in_chans", 3)),
        **dict(backbone.get("kwargs") or {}),
    )
    classifier = model.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise UserError(
            f"--format timm: {backbone['model_name']}'s classifier is a "
            f"{type(classifier).__name__}, not one linear layer like autotimm's head; "
            "use --format onnx, torchscript or torch_export"
        )
    missing, unexpected = model.load_state_dict(trained.model.backbone.state_dict(), strict=False)
    head = model.pretrained_cfg.get("classifier", "")
    head_keys = {f"{head}.weight", f"{head}.bias"}
    if unexpected or set(missing) - head_keys:
        raise UserError(
            f"--format timm: {backbone['model_name']} with a classifier does not take the "
            f"backbone's weights (missing {sorted(set(missing) - head_keys)[:5]}, "
            f"unexpected {unexpected[:5]}); use --format onnx, torchscript or torch_export"
        )
    with torch.no_grad():
        classifier.weight.copy_(trained.model.head.fc.weight)
        classifier.bias.copy_(trained.model.head.fc.bias)
    return model.eval()


def export_timm(trained: TrainedModel, out: Path, atol: float = DEFAULT_ATOL) -> ParityReport:
    """Write the folder `out`; check that timm alone loads it with the same outputs."""
    model = timm_classifier(trained)
    config = trained.data_config
    data_config = {
        "input_size": tuple(int(v) for v in config["input_size"]),
        "interpolation": config["interpolation"],
        "mean": tuple(float(v) for v in config["mean"]),
        "std": tuple(float(v) for v in config["std"]),
        "crop_pct": float(config["crop_pct"]),
        "crop_mode": "center",
    }
    timm.models.save_for_hf(
        model,
        str(out),
        # the source weights' tag and license describe timm's weights, not these
        model_config={
            "label_names": list(trained.class_names),
            "pretrained_cfg": {"tag": "autotimm", "license": None},
            # top-level keys timm ignores when loading: how to read the outputs
            # (multi-label models: sigmoid per label, label_threshold)
            **output_description(trained),
        },
        safe_serialization=True,
        data_config=data_config,
    )
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    example = check_batch(data_config["input_size"])
    return compare("timm", trained.network().cpu(), loaded, example, atol)
