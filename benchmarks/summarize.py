"""Markdown tables from benchmark JSON lines (results.jsonl written with --out).

python benchmarks/summarize.py OUT_DIR/results.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for _, key in columns) + " |")
    return lines


COLUMNS = {
    "overhead": [
        ("model", "model"), ("px", "image_size"), ("batch", "batch_size"),
        ("precision", "precision"), ("compile", "compile"), ("callbacks", "callbacks"),
        ("framework img/s", "framework_img_s"), ("raw timm img/s", "raw_img_s"),
        ("ratio", "ratio"), ("paired ratio", "paired_ratio"),
        ("ms/step added", "overhead_ms_per_step"), ("threads", "threads"),
        ("device", "device_name"), ("date", "date"),
    ],
    "datapipe": [
        ("model", "model"), ("px", "image_size"), ("batch", "batch_size"),
        ("workers", "num_workers"), ("callbacks", "callbacks"),
        ("synthetic img/s", "synthetic_img_s"), ("JPEG, CPU decode", "cpu_img_s"),
        ("JPEG, GPU decode", "gpu_img_s"), ("GPU/synthetic", "gpu_vs_synthetic"),
        ("CPU/synthetic", "cpu_vs_synthetic"), ("loader only CPU", "cpu_loader_only_img_s"),
        ("loader only GPU", "gpu_loader_only_img_s"), ("device", "device_name"),
        ("date", "date"),
    ],
    "startup": [
        ("import torch+timm+lightning s", "import_baseline_s"),
        ("train.py default: first step s", "default_first_step_s"),
        ("default over imports s", "default_over_baseline_s"),
        ("train.py lean: first step s", "lean_first_step_s"),
        ("lean over imports s", "lean_over_baseline_s"),
        ("autotimm modules import s", "autotimm_import_s"), ("date", "date"),
    ],
    "sync_check": [
        ("model", "model"), ("callbacks", "callbacks"), ("metrics", "metrics"),
        ("syncs/step", "syncs_per_step"), ("sites", "sync_sites"), ("device", "device_name"),
    ],
    "sweep_gpu_claims": [
        ("trial", "trial"), ("status", "status"), ("claimed GPU", "claimed"),
        ("ran on GPU", "gpu"), ("device", "device"), ("peak GPU MB", "peak_gpu_memory_mb"),
        ("wall s", "wall_time_s"),
    ],
}  # fmt: skip


def _rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A result line as table rows: sweep_claims.py's line holds one row per trial."""
    if result.get("benchmark") != "sweep_gpu_claims":
        return [result]
    trials = result.get("trials") or []
    return [dict(t, benchmark=result["benchmark"], trial=i) for i, t in enumerate(trials)]


def main(path: str) -> None:
    lines = Path(path).read_text().splitlines()
    rows = [row for line in lines if line.strip() for row in _rows_of(json.loads(line))]
    for name, columns in COLUMNS.items():
        chosen = [row for row in rows if row.get("benchmark") == name]
        if chosen:
            print(f"\n### {name}\n")
            print("\n".join(table(chosen, columns)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.jsonl")
