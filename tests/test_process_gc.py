"""train.py defers garbage collection while importing and freezes what the imports made.

Each case runs in a new interpreter: freezing objects in pytest's own process would keep
them for the rest of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, train_env


def _python(code: str, tmp_path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freeze_only_after_defer_and_only_once(tmp_path):
    state = _python(
        """
import gc, json
from autotimm import startup as process_gc
default = gc.get_threshold()
process_gc.freeze_imported()                 # never deferred: nothing changes
untouched = gc.get_freeze_count()
process_gc.defer_collections()
deferred = gc.get_threshold()
import timm                                  # the kind of import train.py defers for
process_gc.freeze_imported()
frozen = gc.get_freeze_count()
junk = [[] for _ in range(1000)]
process_gc.freeze_imported()                 # a second call (a sweep's next trial): no-op
process_gc.defer_collections()               # train.py run again in this process: no-op
redeferred = gc.get_threshold()
process_gc.freeze_imported()
print(json.dumps(dict(default=default, untouched=untouched, deferred=deferred, frozen=frozen,
                      again=gc.get_freeze_count(), redeferred=redeferred,
                      restored=gc.get_threshold())))
""",
        tmp_path,
    )
    assert state["untouched"] == 0
    assert state["deferred"][0] > state["default"][0]
    assert state["frozen"] > 100_000  # timm and torch: hundreds of thousands of objects
    assert state["again"] == state["frozen"]
    assert state["redeferred"] == state["default"]
    assert state["restored"] == state["default"]


def test_train_py_run_freezes_its_imports_and_restores_the_collector(real_run):
    # a real `train.py` run in one interpreter (the suite's shared one, conftest.real_run);
    # the state is read after Hydra returns
    state = real_run.gc
    assert state["frozen"] > 100_000
    assert state["threshold"] == state["default"]


@pytest.mark.parametrize(
    ("launcher", "frozen_at_start"),
    [
        (None, False),  # Hydra's basic launcher: the first trial's train() freezes
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", True),
    ],
)
def test_sweep_process_gets_its_collector_back_unless_trials_run_in_it(
    tmp_path, launcher, frozen_at_start
):
    # the multirun callback: a sweep whose trials run elsewhere never reaches train()
    state = _python(
        """
import gc, json, sys
from omegaconf import OmegaConf
from autotimm import startup as process_gc
from autotimm.sweep.multirun_checks import MultirunChecks
default = gc.get_threshold()
process_gc.defer_collections()
config = {"trainer": {"devices": 1}}
if sys.argv[1] != "None":
    config["hydra"] = {"launcher": {"_target_": sys.argv[1]}}
MultirunChecks().on_multirun_start(OmegaConf.create(config))
print(json.dumps(dict(default=default, frozen=gc.get_freeze_count(),
                      threshold=gc.get_threshold())))
""",
        tmp_path,
        str(launcher),
    )
    assert (state["frozen"] > 0) is frozen_at_start
    assert (state["threshold"] == state["default"]) is frozen_at_start


def test_import_autotimm_process_gc_is_light():
    # train.py imports it before anything else: it must not pull in torch
    code = "import sys, autotimm.startup; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
