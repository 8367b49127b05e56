"""The benchmarks in --tiny mode, so they cannot rot: each must end with one JSON line.

The three scripts start together (each is mostly torch/lightning start-up) and every
test waits for its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TIMEOUT = 300

EXPECTED = {
    "overhead": {
        "benchmark", "model", "batch_size", "image_size", "precision", "compile",
        "framework_img_s", "raw_img_s", "ratio", "framework_runs", "raw_runs", "clock",
        "device", "device_name", "torch", "timm", "lightning", "date",
    },
    "datapipe": {
        "benchmark", "model", "batch_size", "image_size", "jpeg_size", "images",
        "avg_jpeg_kb", "num_workers", "synthetic_img_s", "cpu_img_s", "gpu_img_s",
        "cpu_loader_only_img_s", "gpu_loader_only_img_s", "cpu_vs_synthetic",
        "gpu_vs_synthetic", "gpu_vs_cpu", "gpu_pipeline_device", "device", "date",
    },
    "startup": {
        "benchmark", "import_baseline_s", "autotimm_import_s", "tiny_first_step_s",
        "tiny_total_s", "tiny_over_baseline_s", "tiny_over_baseline_cpu_s", "date",
        "tuned_import_baseline_s", "tiny_over_tuned_baseline_s",
    },
    "library_costs": {
        "benchmark", "loss_mean", "metrics", "grad_norm", "hooks", "import", "device",
        "torch", "lightning", "date",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """All three benchmarks started at once, each writing to its own --out folder."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONWARNINGS="ignore")
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), "--tiny", "--out", str(out / name)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in EXPECTED
    }
    yield procs, out
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def test_sync_check_tiny_in_process(launched, tmp_path, monkeypatch):
    """sync_check.py (GPU diagnostics for gpu_all.sh) runs; on a CPU it counts nothing.

    Requests ``launched`` first, so it runs while the three subprocesses do.
    """
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import sync_check

    result = sync_check.main(["--tiny", "--callbacks", "none", "--out", str(tmp_path)])
    assert result["benchmark"] == "sync_check" and result["img_s"] > 0
    if result["device"] == "cpu":
        assert result["syncs_per_step"] is None
    assert json.loads((tmp_path / "results.jsonl").read_text()) == result


def test_step_costs_tiny_in_process(launched, tmp_path, monkeypatch):
    """step_costs.py (the per-cause breakdown) gives a time for every variant."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import step_costs

    result = step_costs.main(["--tiny", "--clock", "cpu", "--out", str(tmp_path)])
    assert set(result["added_ms_per_step"]) == set(step_costs.VARIANTS)
    assert result["raw_ms_per_step"] > 0 and result["clock"] == "cpu"
    assert json.loads((tmp_path / "results.jsonl").read_text()) == result


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_python_clock_leaves_the_compute_out_and_puts_torch_back(launched, monkeypatch):
    """--clock python: the raw loop's time per step shrinks to the Python around the math
    (far below its wall time), and torch's functions are torch's own again afterwards."""
    import importlib

    import torch.autograd

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import step_costs

    adam = importlib.import_module("torch.optim.adam")
    before = (torch.autograd._engine_run_backward, adam.adam)
    args = ["--tiny", "--batch-size", "16", "--image-size", "64", "--steps", "4"]
    wall = step_costs.main([*args, "--clock", "wall"])
    python = step_costs.main([*args, "--clock", "python"])
    assert 0 < python["raw_ms_per_step"] < 0.5 * wall["raw_ms_per_step"]
    assert (torch.autograd._engine_run_backward, adam.adam) == before


@pytest.mark.slow
def test_vs_timm_tiny_autotimm_side(tmp_path):
    """vs_timm.py builds the PNG folder and times `python train.py` on it (timm's train.py
    is not part of this repository: the timm side needs --timm-train)."""
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vs_timm.py"), "--tiny", "--sides", "autotimm"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "vs_timm" and result["wall_s"]["autotimm"] > 0
    assert 0 <= result["top1"]["autotimm"] <= 1 and result["wall_ratio"] is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_benchmark_tiny_ends_with_json_line(launched, name):
    procs, out = launched
    try:
        stdout, stderr = procs[name].communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        procs[name].kill()
        pytest.fail(f"{name}.py --tiny took longer than {TIMEOUT} s")
    assert procs[name].returncode == 0, f"{name}.py failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    last = stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["benchmark"] == name and result["tiny"] is True
    missing = EXPECTED[name] - set(result)
    assert not missing, f"{name} result lacks {sorted(missing)}: {last}"
    # the same line is appended to --out/results.jsonl (what gpu_all.sh collects)
    lines = (out / name / "results.jsonl").read_text().strip().splitlines()
    assert json.loads(lines[-1]) == result
    for key, value in result.items():
        # differences ("..._over_baseline_s", "..._over_tuned_baseline_s") may be negative
        if key.endswith("_s") and "_over_" not in key:
            assert value is None or value > 0, (key, value)


def test_benchmark_help_is_fast():
    """--help must not import torch (the scripts import heavy modules inside main)."""
    for name in EXPECTED:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", str(BENCHMARKS / f"{name}.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "--tiny" in done.stdout
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
        assert "torch" not in imported, name


def test_gpu_all_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_all.sh")], capture_output=True)
    assert done.returncode == 0, done.stderr
    text = (BENCHMARKS / "gpu_all.sh").read_text()
    for name in (
        "overhead.py",
        "datapipe.py",
        "sync_check.py",
        "inference.py",
        "--compile",
        "vit_b16",
        "sweep.gpus=[0]",
        "model.ema_decay",
    ):
        assert name in text


def test_gpu_all_only_runs_the_named_steps_and_records_a_failed_claim_check(tmp_path):
    """ONLY= (a second try) runs just the named steps; the sweep-claims check fails when the
    sweep left no two finished trials, and the failure is recorded, not hidden."""
    env = {**os.environ, "SMOKE": "1", "ONLY": "sweep_claims", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_all.sh"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(s["step"], s["exit"]) for s in steps] == [("sweep_claims", 1)], done.stdout
    claims = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[-1])
    assert claims["benchmark"] == "sweep_gpu_claims" and claims["trials"] == []
    assert claims["problems"] == ["0 trial record(s), 2 expected"]


def _trial_record(folder: Path, status: str, claimed: str | None, gpu: str | None) -> None:
    folder.mkdir(parents=True)
    record = {"status": status, "device": "NVIDIA H100 80GB HBM3", "gpu": gpu}
    record["sweep"] = {"name": "quick", "gpu": claimed}
    (folder / "results.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    "trials, require_gpu, problems",
    [
        ([("completed", "0", "0"), ("pruned", "0", "0")], True, []),
        ([("completed", "0", "0")], True, ["1 trial record(s), 2 expected"]),
        (
            [("completed", "0", "0"), ("failed", None, None)],
            True,
            ["trial 1: status 'failed', not one of ('completed', 'pruned')",
             "trial 1: claimed no real GPU (None)"],
        ),
        ([("completed", "0", "1"), ("completed", "0", "0")], True,
         ["trial 0: claimed GPU 0 but ran on 1"]),
        ([("completed", None, None), ("completed", None, None)], False, []),
    ],
)  # fmt: skip
def test_sweep_claims_reads_each_trials_record(
    tmp_path, capsys, monkeypatch, trials, require_gpu, problems
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import sweep_claims

    for index, (status, claimed, gpu) in enumerate(trials):
        _trial_record(
            tmp_path / "sweep" / "sweeps" / "quick" / f"trial_{index}", status, claimed, gpu
        )
    args = [str(tmp_path / "sweep"), "--out", str(tmp_path)] + ["--require-gpu"] * require_gpu
    assert sweep_claims.main(args) == (1 if problems else 0)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["problems"] == problems
    assert [t["claimed"] for t in line["trials"]] == [claimed for _, claimed, _ in trials]
    assert json.loads((tmp_path / "results.jsonl").read_text()) == line


def test_summarize_lists_each_sweep_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import summarize

    line = {"benchmark": "sweep_gpu_claims", "problems": [], "trials": [
        {"status": "completed", "claimed": "0", "gpu": "0", "device": "H100"},
        {"status": "pruned", "claimed": "0", "gpu": "0", "device": "H100"},
    ]}  # fmt: skip
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n")
    summarize.main(str(tmp_path / "results.jsonl"))
    table = [row for row in capsys.readouterr().out.splitlines() if row.startswith("| ")]
    assert table[1:] == ["| 0 | completed | 0 | 0 | H100 | - | - |",
                         "| 1 | pruned | 0 | 0 | H100 | - | - |"]  # fmt: skip


def test_offline_wheels_script_is_valid_bash():
    script = BENCHMARKS / "offline_wheels.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_digits_load_without_importing_sklearn(import_probe):
    """Start-up: the default data (digits) is read without sklearn's ~1 s import
    (answered by one fresh interpreter, conftest.IMPORT_PROBE)."""
    assert import_probe["digits"] == [1797, False]


def test_digits_arrays_equal_sklearn_load_digits():
    import numpy as np
    from sklearn.datasets import load_digits

    from autotimm.data.sources import digits_arrays

    images, targets = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images)
    assert np.array_equal(targets, reference.target)
