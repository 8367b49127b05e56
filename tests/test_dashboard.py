"""The live dashboard: `python -m autotimm.dashboard` in a real (headless) browser,
`sweep.dashboard=true` beside a sweep, the trial attributes it shows, and its refusals.

One real sweep of two tiny trials (synthetic data, one simulated GPU) with the dashboard
beside it: trial 0 trains its one epoch; trial 1 has two and a threshold no accuracy
reaches, so the pruner stops it after its first. Debian's Chromium loads the page
(`make test` installs it: scripts/test-data.sh); without it the browser test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_sweeps import TINY, load_study, sweep, sweep_dir

NAME = "live_view"
DASHBOARD_SWEEP = [
    "+sweeps=quick",
    f"sweep.name={NAME}",
    "sweep.dashboard=true",
    "hydra.sweeper.n_trials=2",
    "trainer.max_epochs=choice(1,2)",
    "sweep.enqueue=[{trainer: {max_epochs: 1}}, {trainer: {max_epochs: 2}}]",
    "hydra/sweeper/pruner=threshold",
    "hydra.sweeper.pruner.lower=2.0",  # val/accuracy never reaches it
    "hydra.sweeper.pruner.n_warmup_steps=0",  # judged from the first epoch (never the last)
    *(o for o in TINY if not o.startswith("trainer.max_epochs=")),
    "backbone.model_name=test_resnet",  # timm's smallest resnet; its cost is measured
]
URL = re.compile(r"http://127\.0\.0\.1:\d+/dashboard/studies/\d+")


@pytest.fixture(scope="module")
def dashboard_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp_path = tmp_path_factory.mktemp("dashboard")
    proc = sweep(tmp_path, *DASHBOARD_SWEEP, env={"AUTOTIMM_SIMULATE_GPUS": "1"})
    return sweep_dir(tmp_path, NAME), proc


def test_sweep_dashboard_prints_its_url_once(dashboard_sweep):
    _, proc = dashboard_sweep
    lines = [line for line in proc.stdout.splitlines() if "Optuna dashboard of study" in line]
    assert len(lines) == 1, proc.stdout[-3000:]
    assert f"'{NAME}'" in lines[0] and URL.search(lines[0])


def test_trials_carry_status_gpu_model_cost_and_run_dir(dashboard_sweep):
    folder, _ = dashboard_sweep
    completed, pruned = load_study(folder, NAME).trials
    assert (completed.state.name, pruned.state.name) == ("COMPLETE", "PRUNED")
    assert completed.user_attrs["status"] == "completed"
    assert pruned.user_attrs["status"] == "pruned at epoch 0"
    for trial in (completed, pruned):
        assert trial.user_attrs["run_dir"] == str(folder / f"trial_{trial.number:04d}")
        assert trial.user_attrs["gpu"] == "GPU 0 (simulated)"
    assert completed.user_attrs["params_m"] > 0 and completed.user_attrs["gflops"] > 0


def _served_url(proc: subprocess.Popen, out: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = URL.search(out.read_text())
        if found:
            return found.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the dashboard printed no URL:\n{out.read_text()[-3000:]}")


def _visible_text(html: str) -> str:
    html = re.sub(r"<(style|script|svg)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_dashboard_page_in_a_headless_browser(dashboard_sweep, tmp_path):
    """The page as Chromium renders it (JavaScript run): the study's name, its trial
    count and a trial's attributes, not only the server's HTTP 200."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no Chromium (sudo apt-get install chromium; make test installs it)")
    folder, _ = dashboard_sweep
    out = tmp_path / "dashboard.out"
    with out.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "autotimm.dashboard", str(folder), "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    try:
        url = _served_url(server, out)
        shot = tmp_path / "dashboard.png"
        page = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1280,800",
                "--virtual-time-budget=15000",
                f"--screenshot={shot}",
                "--dump-dom",
                f"{url}/trials",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = _visible_text(page.stdout)
    assert re.search(rf"\b{NAME} \(id=\d+\)", text), text[-2000:]  # the study's header
    assert "2 Trials" in text, text[-2000:]
    assert "GPU 0 (simulated)" in text  # the first trial's user attributes
    assert shot.stat().st_size > 10_000


# -- refusals: one line, nothing created -------------------------------------------------


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("Error:")]
    return line


def test_missing_folder_file_or_study_is_refused_in_one_line(tmp_path, capsys):
    from autotimm.dashboard import main

    assert main([str(tmp_path / "nowhere")]) == 1
    assert "no sweep folder or study file at" in _one_error_line(capsys)
    journal = tmp_path / "gone" / "study.journal"
    assert main([f"journal:{journal}"]) == 1
    assert f"no study file at {journal}" in _one_error_line(capsys)
    assert main([f"sqlite:///{tmp_path / 'gone.db'}"]) == 1
    assert "no study file at" in _one_error_line(capsys)
    assert not (tmp_path / "gone").exists() and not (tmp_path / "gone.db").exists()
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no study in" in _one_error_line(capsys)
    assert list((tmp_path / "empty").iterdir()) == []


def _journal_with(tmp_path: Path, *names: str) -> str:
    import optuna

    from autotimm.sweep.storage import open_storage

    url = f"journal:{tmp_path / 'study.journal'}"
    for name in names:
        optuna.create_study(study_name=name, storage=open_storage(url))
    return url


def test_unknown_study_and_missing_optuna_dashboard_are_refused(
    tmp_path, capsys, monkeypatch, caplog
):
    from autotimm.dashboard import main
    from autotimm.sweep.dashboard import start_beside_sweep

    url = _journal_with(tmp_path, "a")
    assert main([url, "--study", "b"]) == 1
    line = _one_error_line(capsys)
    assert "no study 'b' in" in line and "studies there: ['a']" in line
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    assert main([url]) == 1
    assert "pip install 'autotimm[dashboard]'" in _one_error_line(capsys)
    # beside a sweep: a warning, and the sweep goes on
    assert start_beside_sweep(url, {"dashboard": True}, "a") is None
    assert "pip install 'autotimm[dashboard]'; the sweep goes on without it" in caplog.text
    assert start_beside_sweep(url, {"dashboard": False}, "a") is None


def test_several_studies_open_on_the_list_page(tmp_path):
    import json
    from urllib.request import urlopen

    from autotimm.sweep.dashboard import Dashboard, open_studies

    served = open_studies(_journal_with(tmp_path, "a", "b"))
    assert (served.studies, served.study_name, served.study_id) == (["a", "b"], None, None)
    dashboard = Dashboard(served, port=0).start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/dashboard", dashboard.url)
        api = dashboard.url.removesuffix("/dashboard") + "/api/studies"
        with urlopen(api, timeout=30) as response:
            names = [s["study_name"] for s in json.load(response)["study_summaries"]]
        assert sorted(names) == ["a", "b"]
    finally:
        dashboard.close()


def test_attributes_of_a_real_gpu_trial_and_a_failed_one(tmp_path):
    from autotimm.records.results import ModelCost, Objective, RunRecord, write_record
    from autotimm.sweep.dashboard import trial_attributes

    record = RunRecord(
        "completed", Objective("val/accuracy", 0.9), str(tmp_path), gpu="1",
        device="NVIDIA H100 80GB HBM3", model=ModelCost(params_m=11.2, gflops=3.6),
    )  # fmt: skip
    write_record(tmp_path, record)
    assert trial_attributes(str(tmp_path)) == {
        "status": "completed",
        "gpu": "GPU 1, NVIDIA H100 80GB HBM3",
        "params_m": 11.2,
        "gflops": 3.6,
    }
    write_record(tmp_path, RunRecord("failed", Objective("val/accuracy"), str(tmp_path)))
    reason = "RuntimeError: CUDA out of memory"
    assert trial_attributes(str(tmp_path), reason) == {"status": f"failed: {reason}", "gpu": "cpu"}
    # a worker that died before writing its record
    assert trial_attributes(str(tmp_path / "none"), reason) == {"status": f"failed: {reason}"}
