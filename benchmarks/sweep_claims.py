"""What each trial of a sweep ran on, read back from its results.json (gpu_all.sh's check).

    python benchmarks/sweep_claims.py SWEEP_OUTPUT_DIR [--trials 2] [--require-gpu] [--out DIR]

Passes (exit 0) when the sweep left exactly ``--trials`` finished trials (completed or
pruned) and, with ``--require-gpu``, each one claimed a GPU from the sweep's pool and ran on
that same GPU (results.json's ``sweep.gpu`` equals its ``gpu``, on a CUDA device). Prints one
JSON line last (also appended to --out/results.jsonl), whatever the outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

FINISHED = ("completed", "pruned")
KEYS = ("status", "device", "gpu", "gpu_simulated", "peak_gpu_memory_mb", "wall_time_s")


def read_trials(root: Path) -> list[dict[str, Any]]:
    """One row per results.json under ``root``: what the trial ran on and what it claimed."""
    rows = []
    for path in sorted(root.glob("**/results.json")):
        record = json.loads(path.read_text())
        row = {key: record.get(key) for key in KEYS}
        row["claimed"] = (record.get("sweep") or {}).get("gpu")
        rows.append(row)
    return rows


def problems(trials: list[dict[str, Any]], expected: int, require_gpu: bool) -> list[str]:
    """What is wrong with the sweep's trials (empty: the check passes)."""
    found = []
    if len(trials) != expected:
        found.append(f"{len(trials)} trial record(s), {expected} expected")
    for index, trial in enumerate(trials):
        if trial["status"] not in FINISHED:
            found.append(f"trial {index}: status {trial['status']!r}, not one of {FINISHED}")
        if require_gpu:
            if trial["claimed"] is None or trial["gpu_simulated"]:
                found.append(f"trial {index}: claimed no real GPU ({trial['claimed']!r})")
            elif str(trial["claimed"]) != str(trial["gpu"]):
                found.append(
                    f"trial {index}: claimed GPU {trial['claimed']} but ran on {trial['gpu']}"
                )
            if trial["device"] in (None, "cpu"):
                found.append(f"trial {index}: ran on {trial['device']!r}, not a CUDA device")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="the sweep's output folder (paths.output_dir)")
    p.add_argument("--trials", type=int, default=2, help="finished trials expected")
    p.add_argument("--require-gpu", action="store_true", help="each claimed and used a GPU")
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    args = p.parse_args(argv)
    trials = read_trials(args.root)
    found = problems(trials, args.trials, args.require_gpu)
    line = json.dumps({"benchmark": "sweep_gpu_claims", "trials": trials, "problems": found})
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "results.jsonl", "a") as out:
            out.write(line + "\n")
    print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
