"""The start-up image check (autotimm.data.files.check_images) over many files: cached
files are checked in one thread, files that wait on the disk in runs per thread; every
file's verdict stays in its place."""

from __future__ import annotations

import time
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
            Image.fromarray(np.full((4, 4), i % 256, dtype=np.uint8)).save(path)
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


class _PoolSpy:
    """Stands in for ThreadPoolExecutor: records that a pool was made, runs it in order."""

    made = 0

    def __init__(self, max_workers: int) -> None:
        type(self).made += 1

    def __enter__(self) -> _PoolSpy:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, runs):
        return [fn(run) for run in runs]


def test_reads_that_wait_on_the_disk_go_to_threads_in_order(tmp_path, monkeypatch):
    from autotimm.data import files

    checked = files._problem

    def slow_disk(path, verify):  # wall time without CPU time, like a cold network disk
        time.sleep(0.002)
        return checked(path, verify)

    monkeypatch.setattr(files, "_problem", slow_disk)
    monkeypatch.setattr(files, "ThreadPoolExecutor", _PoolSpy)
    _PoolSpy.made = 0
    broken = {0, 150, 299, 298}  # sampled (every 3rd), and in the runs after the sample
    paths = _folder(tmp_path, 300, broken)
    with pytest.warns(UserWarning, match="skipped 4 corrupt"):
        kept, _ = check_images(paths, list(range(300)), verify=True, skip_corrupt=True)
    assert _PoolSpy.made == 1
    assert kept == [p for i, p in enumerate(paths) if i not in broken]


def test_cached_files_are_checked_in_this_thread(tmp_path, monkeypatch):
    from autotimm.data import files

    # the decision itself is timed (test below); here: what follows from "not waiting"
    monkeypatch.setattr(files, "_waits_on_disk", lambda wall_s, cpu_s: False)
    monkeypatch.setattr(files, "ThreadPoolExecutor", _PoolSpy)
    _PoolSpy.made = 0
    paths = _folder(tmp_path, 300, {1, 200, 299})  # sampled (0, 3, ...) and not
    with pytest.raises(CorruptImageError, match=r"3 unreadable.*001\.png.*200\.png.*299\.png"):
        check_images(paths, [0] * 300, verify=True, skip_corrupt=False)
    assert _PoolSpy.made == 0


@pytest.mark.parametrize(
    ("wall_s", "cpu_s", "waits"),
    [
        (0.0028, 0.0027, False),  # 100 cached PNGs measured here
        (0.008, 0.0027, False),  # the same while another thread holds the GIL (about 3x)
        (0.004, 0.0, False),  # a coarse CPU clock (Windows ticks every 15.6 ms)
        (0.200, 0.003, True),  # 100 files from a cold network disk
    ],
)
def test_waiting_on_the_disk_is_wall_time_well_over_cpu_time(wall_s, cpu_s, waits):
    from autotimm.data.files import _waits_on_disk

    assert _waits_on_disk(wall_s, cpu_s) is waits
