"""Reader for the IDX format of (Fashion-)MNIST, gzipped or not."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from autotimm.user_errors import UserError

# IDX type code 0x08 is unsigned byte, the only one (Fashion-)MNIST uses
_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file into a uint8 array of the shape its header declares."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code != _UBYTE:
        raise UserError(f"{path}: IDX type code {type_code:#04x} is not supported (only 0x08)")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    if values.size != math.prod(dims):
        raise UserError(
            f"{path}: header declares shape {dims} ({math.prod(dims)} values) "
            f"but the file holds {values.size} (truncated?)"
        )
    return values.reshape(dims)


def find_idx_file(folders: Iterable[Path], stem: str) -> Path | None:
    """First ``<folder>/<stem>`` or ``<folder>/<stem>.gz`` that exists, else None."""
    for folder in folders:
        for name in (stem, f"{stem}.gz"):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None
