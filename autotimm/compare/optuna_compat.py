"""What Optuna 2.10's matplotlib plots need from a newer matplotlib, for the time they draw.

autotimm pins optuna 2.10.1 (hydra-optuna-sweeper 1.3 pins optuna<3), whose
`optuna.visualization.matplotlib` predates two matplotlib changes:

- `matplotlib.cm.get_cmap` is gone since matplotlib 3.9 (the importances plot calls it);
- since 3.6, `Figure.colorbar` of a mappable not yet on an Axes raises instead of taking
  the current Axes (the parallel-coordinate plot adds its lines after the colorbar).

`matplotlib_compat()` restores both behaviours while a plot is drawn; everything is put
back on exit. `log10_axes()` mends a bug of that plot itself: it puts a log parameter's
log10 values on an axis it then log-scales again (a learning rate's negative log10s make
today's matplotlib raise). The drawing stays Optuna's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def matplotlib_compat() -> Iterator[None]:
    """matplotlib < 3.6 behaviour for Optuna 2.10's plots, inside the block only."""
    import matplotlib
    import matplotlib.cm
    from matplotlib.figure import Figure

    added_get_cmap = not hasattr(matplotlib.cm, "get_cmap")
    if added_get_cmap:
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap  # type: ignore[attr-defined]
    colorbar = Figure.colorbar

    def colorbar_on_current_axes(
        self: Figure, mappable: Any, cax: Any = None, ax: Any = None, **kwargs: Any
    ) -> Any:
        if cax is None and ax is None and getattr(mappable, "axes", None) is None:
            ax = self.gca()  # what matplotlib did before 3.6
        return colorbar(self, mappable, cax=cax, ax=ax, **kwargs)

    Figure.colorbar = colorbar_on_current_axes  # type: ignore[method-assign]
    try:
        yield
    finally:
        Figure.colorbar = colorbar  # type: ignore[method-assign]
        if added_get_cmap:
            del matplotlib.cm.get_cmap


@contextmanager
def log10_axes() -> Iterator[None]:
    """Inside the block, `set_yscale("log")` keeps the axis linear and labels its ticks
    10**y: the axes Optuna 2.10's parallel-coordinate plot log-scales hold log10 values."""
    from matplotlib.axes import Axes
    from matplotlib.ticker import FuncFormatter

    set_yscale = Axes.set_yscale

    def power_of_ten_labels(self: Axes, value: Any, **kwargs: Any) -> Any:
        if value != "log":
            return set_yscale(self, value, **kwargs)
        self.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{10**y:.3g}"))
        return None

    Axes.set_yscale = power_of_ten_labels  # type: ignore[method-assign]
    try:
        yield
    finally:
        Axes.set_yscale = set_yscale  # type: ignore[method-assign]
