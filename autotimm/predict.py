"""`python -m autotimm.predict MODEL INPUTS...`: label images with a trained model.

MODEL is a checkpoint, a run directory (its best checkpoint) or a sweep directory (the
best trial's best checkpoint); INPUTS are image files, folders (recursively) or CSV lists.
Preprocessing is the run's own evaluation transform, rebuilt from the checkpoint alone.
Writes one row per image (path, top-1 label and probability, the top-k labels and
probabilities) to predictions.csv (or .json) and prints the count per class.
Multi-label models: the labels at or over their threshold (the model's `label_threshold`,
or --threshold) and every label's probability (columns `prob_<label>`); --top-k is refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotimm.user_errors import UserError

if TYPE_CHECKING:  # torch and the model code load when used: `--help` stays fast
    from autotimm.inference.checkpoint import TrainedModel
    from autotimm.inference.tta import TTAPlan
    from autotimm.inference.writers import Prediction

PROGRESS_MIN_BATCHES = 5  # a progress bar only where it is worth a line
DEFAULT_TOP_K = 5


@dataclass
class PredictResult:
    """What `predict` labelled, what it skipped (path, why), where it wrote."""

    rows: list[Prediction]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None
    tta: TTAPlan | None = None


def predict_images(
    trained: TrainedModel,
    paths: Sequence[Path],
    top_k: int | None = None,
    tta: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    strict: bool = False,
    progress: bool = False,
    threshold: float | None = None,
) -> PredictResult:
    """Predictions for `paths` (unreadable files skipped, or UserError with `strict`).
    `top_k` (single-label; default 5) or `threshold` (multi-label; default the model's)."""
    import torch
    from torch.utils.data import DataLoader

    from autotimm.data.transforms import build_transform
    from autotimm.inference.images import ImageFiles, collate_readable
    from autotimm.inference.tta import plan_for, probabilities

    top_k = checked_output_options(trained, top_k, threshold)
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    dataset = ImageFiles(paths, build_transform(trained.data_config, False), trained.in_chans)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_readable
    )
    plan = plan_for(trained.data_hparams) if tta else None
    device = next(trained.model.parameters()).device
    probs, kept, skipped = [], [], []
    for images, indices, bad in _progress(loader, progress):
        for index, why in bad:
            if strict:
                raise UserError(f"unreadable image (--strict): {why}")
            print(f"skipped: {why}", file=sys.stderr)
            skipped.append((str(paths[index]), why))
        if images is not None:
            probs.append(probabilities(trained.model, images.to(device), plan).cpu())
            kept += [paths[i] for i in indices]
    if not kept:
        raise UserError(f"none of the {len(paths)} image(s) could be read")
    rows = _rows(trained, kept, torch.cat(probs), top_k, threshold)
    return PredictResult(rows, skipped, tta=plan)


def checked_output_options(trained: TrainedModel, top_k: int | None, threshold: Any) -> int:
    """The top-k to use (single-label), after refusing what the model's kind cannot use."""
    if trained.multi_label:
        if top_k is not None:
            raise UserError(
                f"--top-k {top_k}: {trained.checkpoint.name} is a multi-label model; it "
                "outputs every label's probability and the labels over their threshold "
                "(set that with --threshold)"
            )
        number = isinstance(threshold, (int, float))
        if threshold is not None and not (number and 0 < threshold < 1):
            raise UserError(f"--threshold {threshold!r}: must be a probability in (0, 1)")
        return 0
    if threshold is not None:
        raise UserError(
            f"--threshold {threshold}: {trained.checkpoint.name} is a single-label model "
            "(one class per image); use --top-k"
        )
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    return top_k


def _rows(
    trained: TrainedModel, paths: list[Path], probs: Any, top_k: int, threshold: float | None
) -> list[Prediction]:
    from autotimm.inference.writers import multi_label_rows, rows_from
    from autotimm.model.multilabel import labels_over_threshold, thresholds

    if not trained.multi_label:
        return rows_from(paths, probs, trained.class_names, top_k)
    chosen = trained.label_threshold if threshold is None else threshold
    over = labels_over_threshold(probs, thresholds(chosen, probs.shape[-1]))
    return multi_label_rows(paths, probs, trained.class_names, over)


def _progress(loader: Any, enabled: bool) -> Any:
    if not enabled or len(loader) < PROGRESS_MIN_BATCHES:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc="predict", unit="batch", file=sys.stderr)


def predict(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path = "predictions.csv",
    top_k: int | None = None,
    tta: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    workers: int | None = None,
    strict: bool = False,
    path_column: str = "path",
    progress: bool = False,
    threshold: float | None = None,
) -> PredictResult:
    """Label INPUTS with MODEL and write `out` (.csv, or .json); see the module doc."""
    from autotimm.data.datamodule import default_num_workers
    from autotimm.inference.checkpoint import load_trained, resolve_device
    from autotimm.inference.images import collect_images
    from autotimm.inference.writers import write_predictions

    paths = collect_images(inputs, path_column)
    trained = load_trained(model, resolve_device(device))
    workers = default_num_workers("image_folder") if workers is None else workers
    result = predict_images(
        trained, paths, top_k, tta, batch_size, workers, strict, progress, threshold
    )
    k = min(top_k or DEFAULT_TOP_K, len(trained.class_names))
    delimiter = str(trained.data_hparams.get("label_delimiter") or " ")
    result.out = write_predictions(Path(out), result.rows, k, delimiter)
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m autotimm.predict", description=__doc__.split("\n")[0]
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint, run directory or sweep directory")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="image files, folders, CSV lists")
    p.add_argument("--out", default="predictions.csv", help="output file (.csv or .json)")
    p.add_argument(
        "--top-k", type=int, default=None, help="classes per image in the output (default 5)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="multi-label models: predict labels at this probability (default: the model's)",
    )
    p.add_argument("--tta", action="store_true", help="average over test-time augmented views")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--workers", type=int, default=None, help="loader processes (default: fits the machine)"
    )
    p.add_argument("--strict", action="store_true", help="fail on the first unreadable image")
    p.add_argument("--path-column", default="path", help="the path column of CSV inputs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; user errors print one short message and return 1."""
    from autotimm.user_errors import user_errors_reported

    args = parser().parse_args(argv)  # before the heavy imports: `--help` stays fast
    from autotimm.inference.writers import summary

    with user_errors_reported(exit_process=False) as ok:
        result = predict(
            args.model, args.inputs, args.out, args.top_k, args.tta, args.batch_size,
            args.device, args.workers, args.strict, args.path_column, progress=True,
            threshold=args.threshold,
        )  # fmt: skip
        if result.tta is not None:
            print(f"test-time augmentation: {result.tta.describe()}")
        print(summary(result.rows, len(result.skipped), result.out or Path(args.out)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
