"""MODEL (a checkpoint, a run directory or a sweep directory) -> a trained classifier.

Everything prediction needs comes from the checkpoint alone: the ImageClassifier's saved
constructor arguments rebuild the model (no download: `on_save_checkpoint` turned
`pretrained` off), the ImageDataModule's state holds the class names and timm's resolved
data config (input size, interpolation, mean/std, crop_pct), i.e. the eval transform.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from autotimm.records.results import RESULTS_FILE, RecordError, read_record
from autotimm.user_errors import UserError

log = logging.getLogger(__name__)

SWEEP_SUMMARY = (
    "optimization_results.yaml"  # autotimm.sweep.summary.RESULTS_YAML (no optuna import)
)
MODEL_FORMS = (
    f"a checkpoint file (.ckpt), a run directory (with {RESULTS_FILE}) or a sweep directory "
    "(with optimization_results.yaml or trial runs)"
)


@dataclass
class TrainedModel:
    """A trained classifier (eval mode) with what its predictions need."""

    model: nn.Module  # the ImageClassifier: images (N, C, H, W) -> logits
    class_names: list[str]
    data_config: dict[str, Any]  # input_size (C, H, W), mean, std, interpolation, crop_pct
    checkpoint: Path
    hparams: dict[str, Any]  # the ImageClassifier's saved constructor arguments
    data_hparams: dict[str, Any] = field(default_factory=dict)  # the ImageDataModule's
    # what network() outputs: "logits", or "probabilities" (softmax; sigmoid per label)
    outputs: str = "logits"

    @property
    def backbone_name(self) -> str:
        return str(self.hparams["backbone"]["model_name"])

    @property
    def in_chans(self) -> int:
        return int(self.data_config["input_size"][0])

    @property
    def multi_label(self) -> bool:
        """Several labels per image: sigmoid per label, labels over `label_threshold`."""
        return bool(self.hparams.get("multi_label", False))

    @property
    def label_threshold(self) -> float | list[float]:
        return self.hparams.get("label_threshold", 0.5)

    def network(self) -> nn.Module:
        """Backbone and head as one plain module (what the exporters trace); with
        `outputs="probabilities"`, a softmax (multi-label: a sigmoid per label) after it."""
        layers = [self.model.backbone, self.model.head]
        if self.outputs == "probabilities":
            layers.append(nn.Sigmoid() if self.multi_label else nn.Softmax(dim=-1))
        return nn.Sequential(*layers).eval()


def resolve_checkpoint(model: str | Path) -> Path:
    """The checkpoint file MODEL names: itself, a run's best, or the sweep's best run's best."""
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"MODEL {str(path)!r} does not exist; give {MODEL_FORMS}")
    if path.is_file():
        return path
    if (path / RESULTS_FILE).is_file():
        return run_checkpoint(path)
    best_run = best_run_of_sweep(path)
    if best_run is None:
        raise UserError(f"MODEL {str(path)!r} is a folder without runs; give {MODEL_FORMS}")
    return run_checkpoint(best_run)


def run_checkpoint(run_dir: Path) -> Path:
    """A run's best checkpoint (its last one when no best was kept)."""
    try:
        record = read_record(run_dir)
    except RecordError as exc:
        raise UserError(f"run directory {str(run_dir)!r}: {exc}") from exc
    assert record is not None
    for saved in (record.best_model_path, record.last_model_path):
        if not saved:
            continue
        # a moved or copied run folder: its checkpoints moved with it
        for candidate in (Path(saved), run_dir / "checkpoints" / Path(saved).name):
            if candidate.is_file():
                return candidate
    raise UserError(
        f"run directory {str(run_dir)!r} (status {record.status!r}) has no checkpoint "
        f"(best_model_path={record.best_model_path!r}); a completed run keeps one under "
        "checkpoints/"
    )


def best_run_of_sweep(folder: Path) -> Path | None:
    """The sweep summary's best run, else the best completed run found below the folder."""
    summary = folder / SWEEP_SUMMARY
    if summary.is_file():
        import yaml

        data = yaml.safe_load(summary.read_text()) or {}
        if "solutions" in data and "best_run_dir" not in data:
            dirs = [s.get("run_dir") for s in data["solutions"]]
            raise UserError(
                f"sweep {str(folder)!r} optimised several objectives: it has a Pareto front, "
                f"not one best run; give one of its run directories: {dirs}"
            )
        best = data.get("best_run_dir")
        if best and (Path(best) / RESULTS_FILE).is_file():
            return Path(best)
    from autotimm.records.ranking import rank
    from autotimm.records.runs import find_runs

    ranked = [run for run in rank(find_runs(folder)) if run.status == "completed"]
    return ranked[0].run_dir if ranked else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped), checked to be autotimm's."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # not a zip/pickle, or a pickle with arbitrary objects
        raise UserError(
            f"{str(path)!r} is not an autotimm checkpoint (torch.load failed: "
            f"{type(exc).__name__}); give {MODEL_FORMS}"
        ) from exc
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not {"backbone", "num_classes"} <= set(hparams):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint)
        raise UserError(
            f"{str(path)!r} is not an autotimm checkpoint: it has no ImageClassifier "
            f"hyper-parameters (backbone, num_classes; found keys {found}); give {MODEL_FORMS}"
        )
    return checkpoint


def data_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The datamodule's saved state ({class_names, data_config}); {} without one."""
    for value in checkpoint.values():
        if isinstance(value, dict) and "data_config" in value:
            return value
    return {}


def load_trained(model: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Resolve MODEL and rebuild its classifier (eval mode, on `device`)."""
    from autotimm.model.classifier import ImageClassifier

    path = resolve_checkpoint(model)
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    # rebuilding must not download or read the original backbone weights
    hparams["backbone"] = {**hparams["backbone"], "pretrained": False, "checkpoint_path": None}
    classifier = ImageClassifier(**hparams)
    state = {k.replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()}
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:  # hparams that look like autotimm's, weights that do not fit
        first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
        raise UserError(
            f"{str(path)!r}: its weights do not fit the ImageClassifier its hyper-parameters "
            f"describe ({first[0].strip()}); is it an autotimm checkpoint?"
        ) from exc
    classifier.eval().requires_grad_(False).to(device)
    saved_data = data_state(checkpoint)
    data_config = saved_data.get("data_config") or _default_data_config(hparams)
    names = hparams.get("class_names") or saved_data.get("class_names")
    return TrainedModel(
        model=classifier,
        class_names=[str(n) for n in names or range(hparams["num_classes"])],
        data_config=dict(data_config),
        checkpoint=path,
        hparams=hparams,
        data_hparams=dict(checkpoint.get("datamodule_hyper_parameters") or {}),
    )


def _default_data_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """Without a datamodule state (trained outside ImageDataModule): the backbone's config."""
    from autotimm.data.transforms import resolve_data_config

    backbone = hparams["backbone"]
    log.warning(
        "the checkpoint holds no data config (trained without ImageDataModule): "
        "using %s's default preprocessing",
        backbone["model_name"],
    )
    return resolve_data_config(backbone["model_name"], in_chans=int(backbone.get("in_chans", 3)))


def resolve_device(device: str | None) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N', checked."""
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise UserError(
            f"--device {device!r} is not a device; accepted: auto, cpu, cuda, cuda:N"
        ) from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device!r}: no CUDA device here; accepted: auto, cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if chosen.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r} not supported; accepted: auto, cpu, cuda, cuda:N")
    return chosen
