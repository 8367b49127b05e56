"""compare.csv: every run, every metric, in rank order."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

CSV_FILE = "compare.csv"


def write_csv(table: list[dict[str, Any]], path: Path) -> Path:
    """Write the rows (the union of their columns, in first-seen order); None is empty."""
    columns: list[str] = []
    for row in table:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in table:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path
