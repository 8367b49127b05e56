"""Prediction rows -> predictions.csv or .json (written whole, then renamed), and a summary."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Prediction:
    """One image's prediction: the top-1 class and the top-k classes, best first."""

    path: str
    label: str
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": n, "probability": p} for n, p in self.top_k],
        }


def rows_from(
    paths: Sequence[Path], probs: torch.Tensor, class_names: Sequence[str], k: int
) -> list[Prediction]:
    """A Prediction per image from its probabilities (N, classes)."""
    k = min(k, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    rows = []
    for path, top_p, top_i in zip(paths, values.tolist(), indices.tolist(), strict=True):
        top = [(class_names[i], round(p, 6)) for i, p in zip(top_i, top_p, strict=True)]
        rows.append(Prediction(str(path), top[0][0], top[0][1], top))
    return rows


def write_predictions(out: Path, rows: Sequence[Prediction], k: int) -> Path:
    """CSV (columns path, label, probability, top1_label, top1_probability, ...) or, for a
    `.json` name, a list of objects. Written to a temporary file, then renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if out.suffix.lower() == ".json":
        tmp.write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    else:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            header = ["path", "label", "probability"]
            for i in range(1, k + 1):
                header += [f"top{i}_label", f"top{i}_probability"]
            writer.writerow(header)
            for row in rows:
                cells: list[object] = [row.path, row.label, row.probability]
                for name, p in row.top_k:
                    cells += [name, p]
                writer.writerow(cells)
    tmp.replace(out)
    return out


def summary(rows: Sequence[Prediction], skipped: int, out: Path) -> str:
    """A few lines: images per predicted class (most first), skipped files, the output."""
    counts = Counter(r.label for r in rows)
    width = max((len(name) for name in counts), default=5)
    lines = [f"{len(rows)} image(s) labelled -> {out}"]
    lines += [f"  {name:<{width}}  {n:>6}" for name, n in counts.most_common()]
    if skipped:
        lines.append(f"skipped {skipped} unreadable image(s) (see the messages above)")
    return "\n".join(lines)
