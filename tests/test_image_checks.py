"""The start-up image check (autotimm.data.files.check_images) over many files: runs of
paths per thread keep every file's verdict in its place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autotimm.data.files import CorruptImageError, check_images


def _folder(tmp_path: Path, count: int, broken: set[int]) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"{i:03d}.png"
        if i in broken:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")
        else:
            Image.fromarray(np.full((4, 4), i, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_many_files_keep_their_order_and_labels_when_corrupt_ones_are_skipped(tmp_path):
    broken = {0, 37, 38, 99}  # first, neighbours inside a run, last: 100 files, 8 threads
    paths = _folder(tmp_path, 100, broken)
    labels = [i % 7 for i in range(100)]
    with pytest.warns(UserWarning, match="skipped 4 corrupt"):
        kept, kept_labels = check_images(paths, labels, verify=True, skip_corrupt=True)
    expected = [i for i in range(100) if i not in broken]
    assert kept == [paths[i] for i in expected]
    assert kept_labels == [labels[i] for i in expected]


def test_many_files_report_the_corrupt_ones_by_name(tmp_path):
    paths = _folder(tmp_path, 70, {5, 66})
    with pytest.raises(CorruptImageError, match=r"2 unreadable.*005\.png.*066\.png"):
        check_images(paths, [0] * 70, verify=True, skip_corrupt=False)
    assert check_images(paths[6:60], [1] * 54, verify=True, skip_corrupt=False)[0] == paths[6:60]
