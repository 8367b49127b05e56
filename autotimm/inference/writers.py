"""Prediction rows -> predictions.csv or .json (written whole, then renamed), and a summary.

Single-label rows: the top-1 class and the top-k classes. Multi-label rows: the labels at or
over their threshold and every label's probability (CSV columns `prob_<label>`).
"""

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
    """One image's prediction: the top-1 class and the top-k classes, best first; for
    multi-label models `labels` (over threshold) and `label_probs` (every label, in order)."""

    path: str
    label: str
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    labels: list[str] | None = None
    label_probs: list[tuple[str, float]] | None = None

    def to_dict(self) -> dict:
        if self.labels is not None:
            probs = dict(self.label_probs or [])
            return {"path": self.path, "labels": self.labels, "probabilities": probs}
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


def multi_label_rows(
    paths: Sequence[Path], probs: torch.Tensor, class_names: Sequence[str], over: torch.Tensor
) -> list[Prediction]:
    """Multi-label rows from per-label probabilities and the 0/1 `over` (N, labels)."""
    rows = []
    for path, row_p, row_over in zip(paths, probs.tolist(), over.tolist(), strict=True):
        every = [(name, round(p, 6)) for name, p in zip(class_names, row_p, strict=True)]
        labels = [name for name, on in zip(class_names, row_over, strict=True) if on]
        best = max(every, key=lambda item: item[1])
        rows.append(Prediction(str(path), best[0], best[1], [], labels, every))
    return rows


def write_predictions(out: Path, rows: Sequence[Prediction], k: int, delimiter: str = " ") -> Path:
    """CSV (columns path, label, probability, top1_label, top1_probability, ...; multi-label:
    path, labels joined by `delimiter`, prob_<label>...) or, for a `.json` name, a list of
    objects. Written to a temporary file, then renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if out.suffix.lower() == ".json":
        tmp.write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    elif rows and rows[0].labels is not None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["path", "labels"] + [f"prob_{n}" for n, _ in rows[0].label_probs or []]
            )
            for row in rows:
                probs = [p for _, p in row.label_probs or []]
                writer.writerow([row.path, delimiter.join(row.labels or []), *probs])
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
    """A few lines: images per predicted class (most first; multi-label: per label over
    its threshold, `(none)` for images without one), skipped files, the output."""
    counts = Counter(
        name for r in rows for name in ([r.label] if r.labels is None else r.labels or ["(none)"])
    )
    width = max((len(name) for name in counts), default=5)
    lines = [f"{len(rows)} image(s) labelled -> {out}"]
    lines += [f"  {name:<{width}}  {n:>6}" for name, n in counts.most_common()]
    if skipped:
        lines.append(f"skipped {skipped} unreadable image(s) (see the messages above)")
    return "\n".join(lines)
