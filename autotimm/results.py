"""results.json: the record of one run that sweeps and comparison read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def device_description() -> dict[str, Any]:
    """Which device trained: name, CUDA index (in the visible set) and visible devices."""
    import torch

    info: dict[str, Any] = {"device": "cpu", "gpu": None}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        info["device"] = torch.cuda.get_device_name(index)
        # the physical GPU id, as the sweep pinned it
        info["gpu"] = visible.split(",")[index] if visible else str(index)
        info["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if os.environ.get("AUTOTIMM_SIMULATED_GPU") is not None:
        info["gpu"] = os.environ["AUTOTIMM_SIMULATED_GPU"]
        info["gpu_simulated"] = True
    return info


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, default=str))
    tmp.replace(path)  # atomic: readers never see half a file
    return path


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
