"""Prediction inputs: image files, folders (recursively) and CSV lists, read through the
run's own evaluation transform; unreadable files are reported, not fatal (unless strict)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from autotimm.data.files import IMAGE_EXTENSIONS, CorruptImageError, is_image_file, load_image
from autotimm.user_errors import UserError

ACCEPTED = f"image files ({', '.join(IMAGE_EXTENSIONS)}), folders of them, or a .csv list"


def collect_images(inputs: Sequence[str | Path], path_column: str = "path") -> list[Path]:
    """Every image INPUTS names, in the order given (folders: sorted, recursively)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if is_image_file(p))
        elif path.suffix.lower() == ".csv" and path.is_file():
            found += _csv_paths(path, path_column)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(path)  # a missing file is reported (and skipped) like a broken one
        elif not path.exists():
            raise FileNotFoundError(f"input {str(path)!r} does not exist; INPUTS are {ACCEPTED}")
        else:
            raise UserError(f"input {str(path)!r} is not one of the accepted inputs: {ACCEPTED}")
    if not found:
        raise UserError(f"no images found in {[str(i) for i in inputs]}; INPUTS are {ACCEPTED}")
    return found


def _csv_paths(csv_file: Path, column: str) -> list[Path]:
    """The paths in `column` of a CSV; relative ones are relative to the CSV's folder."""
    with csv_file.open(newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise UserError(
                f"{str(csv_file)!r} has no column {column!r} (columns: {reader.fieldnames}); "
                "name the path column with --path-column"
            )
        values = [row[column] for row in reader if row.get(column)]
    return [p if p.is_absolute() else csv_file.parent / p for p in map(Path, values)]


class ImageFiles(Dataset):
    """(image tensor or None, index, problem) per file, through `transform`.

    An unreadable file gives None and the reason instead of an exception, so one broken
    file does not stop a batch (the caller skips it or fails, see `--strict`).
    """

    def __init__(self, paths: Sequence[Path], transform: Any, in_chans: int) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"  # as the training data was converted

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            image = load_image(self.paths[index])
        except CorruptImageError as exc:
            return None, index, str(exc)
        if image.mode != self.mode:
            image = image.convert(self.mode)
        return self.transform(image), index, None


def collate_readable(
    items: Sequence[tuple[torch.Tensor | None, int, str | None]],
) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    """Stack the readable images; return their indices and the unreadable (index, why)."""
    good = [(tensor, index) for tensor, index, _ in items if tensor is not None]
    bad = [(index, why or "unreadable") for tensor, index, why in items if tensor is None]
    images = torch.stack([t for t, _ in good]) if good else None
    return images, [i for _, i in good], bad
