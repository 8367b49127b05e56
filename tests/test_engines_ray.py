"""Sweeps through `hydra/launcher=ray_gpu` on a local Ray (`make test-engines` installs the
`ray` extra): real trials, one Ray task each, a new one as soon as any ends."""

from __future__ import annotations

import importlib.util

import pytest

from autotimm.records.results import read_record
from tests.engines_support import need
from tests.test_async_engines import spans_overlap
from tests.test_sweeps import RAY_ON_CPU, TINIEST, load_study, sweep, sweep_dir

pytestmark = pytest.mark.engines


def test_ray_sweep_runs_trials_as_tasks_asynchronously(tmp_path):
    """3 trials, 2 at once: trial 0 holds until trial 2 started, which happens only if
    trial 2 goes out as soon as trial 1 ends (ray.wait), not after the batch."""
    need("Ray (the ray extra)", importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"))
    from tests.conftest import ROOT

    sweep(
        tmp_path,
        "+sweeps=quick",
        *RAY_ON_CPU,
        "sweep.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        *TINIEST,
        "+callbacks.gate._target_=tests.test_async_engines.WaitForTrial",
        "+callbacks.gate.trial=0",
        "+callbacks.gate.successor=2",
        "+callbacks.gate.timeout_s=150",
        env={"PYTHONPATH": str(ROOT)},  # the Ray workers import the gate from tests/
    )
    folder = sweep_dir(tmp_path, "quick")
    study = load_study(folder, "quick")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    records = {n: read_record(folder / f"trial_{n:04d}") for n in range(3)}
    spans = {n: (r.sweep.started_at, r.sweep.finished_at) for n, r in records.items()}
    assert spans[1][1] <= spans[2][0] < spans[0][1], spans
    assert spans_overlap(list(spans.values())) == 2
    assert len({r.sweep.worker_pid for r in records.values()}) == 3  # max_calls=1: fresh workers
