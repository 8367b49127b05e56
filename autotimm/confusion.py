"""Render a confusion matrix and send it to every attached logger that shows images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

KEY = "val/confusion_matrix"


def render_confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str] | None) -> np.ndarray:
    """Confusion matrix as an RGB uint8 image (H, W, 3), rendered headless.

    Uses matplotlib's Agg canvas directly: no pyplot, so the caller's backend (e.g. a
    notebook's) is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = matrix.numpy()
    n = counts.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    size = min(12.0, 2.0 + 0.45 * n)
    fig = Figure(figsize=(size, size), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    if n <= 50:  # beyond that, labels are unreadable anyway
        ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                colour = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_confusion_matrix(
    loggers: Sequence[Any], matrix: torch.Tensor, class_names: Sequence[str] | None, step: int
) -> int:
    """Send the image to each logger that can show one; return how many received it."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    image = None
    sent = 0
    for logger in loggers:
        if not isinstance(logger, (WandbLogger, TensorBoardLogger)):
            continue
        if image is None:
            image = render_confusion_matrix(matrix, class_names)
        if isinstance(logger, WandbLogger):
            logger.log_image(key=KEY, images=[image], step=step)
        else:
            logger.experiment.add_image(KEY, image, global_step=step, dataformats="HWC")
        sent += 1
    return sent
