"""The run record (results.json): one typed definition, written and read through one module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from autotimm.records.results import (
    Objective,
    Pruned,
    RecordError,
    RunRecord,
    SweepInfo,
    has_record,
    read_record,
    record_fields,
    record_path,
    write_record,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_outcome_round_trips(tmp_path):
    records = [
        RunRecord(
            "completed", Objective("val/accuracy", 0.9), str(tmp_path), val={"val/loss": 0.3}
        ),
        RunRecord("failed", Objective("val/accuracy"), str(tmp_path), failure="ValueError: x"),
        RunRecord("interrupted", Objective("val/loss", None, "min"), str(tmp_path)),
        RunRecord(
            "pruned",
            Objective("val/accuracy", 0.2),
            str(tmp_path),
            pruned=Pruned(epoch=1, value=0.2),
            sweep=SweepInfo(name="s", trial=3, params={"optimizer.lr": 0.1}),
        ),
    ]
    for record in records:
        write_record(tmp_path, record)
        assert has_record(tmp_path)
        assert read_record(tmp_path) == record
    data = json.loads(record_path(tmp_path).read_text())
    assert data["pruned"] == {"epoch": 1, "value": 0.2}
    assert data["sweep"]["trial"] == 3


def test_single_runs_leave_out_sweep_and_pruned(tmp_path):
    write_record(tmp_path, RunRecord("completed", Objective("val/accuracy", 1.0), str(tmp_path)))
    data = json.loads(record_path(tmp_path).read_text())
    assert "sweep" not in data and "pruned" not in data


def test_bad_status_names_the_accepted_ones(tmp_path):
    with pytest.raises(RecordError, match=r"'done'.*completed.*failed.*interrupted.*pruned"):
        RunRecord("done", Objective("val/accuracy"), str(tmp_path))


def test_unreadable_and_missing_records(tmp_path):
    assert read_record(tmp_path) is None
    record_path(tmp_path).write_text("{half")
    with pytest.raises(RecordError, match="not readable JSON"):
        read_record(tmp_path)
    record_path(tmp_path).write_text(json.dumps({"objective": {}}))
    with pytest.raises(RecordError, match="no status"):
        read_record(tmp_path)
    for objective in ({}, 3):  # a field of the wrong shape
        record_path(tmp_path).write_text(json.dumps({"status": "failed", "objective": objective}))
        with pytest.raises(RecordError, match="not a run record"):
            read_record(tmp_path)


def test_newer_keys_are_ignored_when_reading(tmp_path):
    data = {"status": "completed", "objective": {"name": "m", "value": 1.0}, "future": 1}
    record_path(tmp_path).write_text(json.dumps(data))
    assert read_record(tmp_path).objective.value == 1.0


def test_readme_documents_every_field():
    readme = (ROOT / "README.md").read_text()
    outputs = readme.split("### Outputs", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"`(\w+)`", outputs))
    missing = [name for name, _ in record_fields() if name not in documented]
    assert not missing, f"README's Outputs section lacks {missing}"


def test_only_the_record_module_names_the_file():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("autotimm", "hydra_plugins")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "results.py" and re.search(r"[\"']results\.json[\"']", path.read_text())
    ]
    assert not offenders, f"results.json named outside autotimm/records/results.py: {offenders}"
