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
    notebook's) is left alone. The figure of a class list is laid out once and redrawn
    with each matrix (building it costs as much as drawing it: about 0.1 s each time).
    """
    counts = matrix.numpy()
    n = counts.shape[0]
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(n))
    figure = _figure(n, names)
    figure.draw(counts)
    return figure.pixels()


class _MatrixFigure:
    """One class list's figure: axes, ticks and layout fixed; the counts change."""

    def __init__(self, n: int, names: tuple[str, ...]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        size = min(12.0, 2.0 + 0.45 * n)
        self.fig = Figure(figsize=(size, size), dpi=80)
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.fig.add_subplot()
        self.image = ax.imshow(np.zeros((n, n)), cmap="Blues")
        if n <= 50:  # beyond that, labels are unreadable anyway
            ax.set_xticks(range(n), list(names), rotation=90 if n > 10 else 0)
            ax.set_yticks(range(n), list(names))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        # the cell texts (small numbers inside the axes) do not move the layout
        self.texts = (
            [[ax.text(j, i, "", ha="center", va="center", fontsize=8) for j in range(n)]
             for i in range(n)]
            if n <= 20
            else []
        )  # fmt: skip
        self.fig.tight_layout()

    def draw(self, counts: np.ndarray) -> None:
        self.image.set_data(counts)
        # what imshow does on a new image: the colour scale spans the data
        self.image.set_clim(counts.min(), counts.max())
        threshold = counts.max() / 2 if counts.size else 0
        for i, row in enumerate(self.texts):
            for j, text in enumerate(row):
                text.set_text(str(int(counts[i, j])))
                text.set_color("white" if counts[i, j] > threshold else "black")
        self.canvas.draw()

    def pixels(self) -> np.ndarray:
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


_FIGURES: dict[tuple[int, tuple[str, ...]], _MatrixFigure] = {}


def _figure(n: int, names: tuple[str, ...]) -> _MatrixFigure:
    """The cached figure of this class list (a run draws one figure per validation)."""
    key = (n, names)
    if key not in _FIGURES:
        if len(_FIGURES) >= 4:  # many class lists in one process: keep memory bounded
            _FIGURES.clear()
        _FIGURES[key] = _MatrixFigure(n, names)
    return _FIGURES[key]


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
