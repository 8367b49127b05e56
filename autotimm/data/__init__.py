"""Image data for autotimm: ``ImageDataModule`` over several sources (``list_sources()``).

Only torch/timm/lightning are imported here; sklearn, pandas and torchvision.datasets are
imported by the sources that need them, when they load.
"""

from __future__ import annotations

from autotimm.data.datamodule import ImageDataModule
from autotimm.data.sources import list_sources

__all__ = ["ImageDataModule", "list_sources"]
