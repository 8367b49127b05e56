"""Shared fixtures: composing the real config tree and running the real train.py.

A new interpreter costs about 6 s of imports on the test machines, so each kind of check
keeps one real `python train.py` run (`run_train`) and its other cases run the same app in
this process (`run_app`: composed like train.py, then `autotimm.app.run.main`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# One CPU thread per process (before torch is imported; runs started here inherit it): the
# suite runs several processes at once on 2-core machines, where torch's spinning OpenMP
# threads slow down many times over as soon as they share a core.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"

# Small, quiet, offline runs: what every end-to-end test starts from.
FAST = [
    "print_config=false",
    "callbacks=quiet",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
]


def train_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path),
        WANDB_CACHE_DIR=str(tmp_path / ".wandb_cache"),
        WANDB_CONFIG_DIR=str(tmp_path / ".wandb_config"),
        AUTOTIMM_OUTPUT_DIR=str(tmp_path / "outputs"),
        HYDRA_FULL_ERROR="0",
        PYTHONWARNINGS="ignore",
        # the tests' own callbacks (tests.engines_support) are trusted targets
        AUTOTIMM_TRUSTED_TARGETS="tests.*",
    )
    return env


def run_train(
    tmp_path: Path,
    *overrides: str,
    check: bool = True,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python train.py <overrides>` from tmp_path (not the repo root); `env` adds to
    or replaces train_env's variables."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *overrides],
        cwd=tmp_path,
        env={**train_env(tmp_path), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"train.py {' '.join(overrides)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


# The suite's one real `python train.py` training run, read by several modules: 2 epochs of
# 3 batches on digits, CSV and offline W&B, with Python's own warning filters and W&B not
# silenced (what a user's terminal shows), through a wrapper that then reports the garbage
# collector's state (train.py's run freezes its imports and restores the collector).
REAL_RUN = [
    *(o for o in FAST if o != "logger=csv"),
    "logger=default",
    "logger.wandb.tags=[digits,smoke]",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
AS_A_USER_SEES_IT = {"PYTHONWARNINGS": "", "WANDB_SILENT": "false"}
GC_AFTER_RUN = """
import gc, json, runpy, sys
default = gc.get_threshold()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print(json.dumps(dict(default=default, frozen=gc.get_freeze_count(),
                      threshold=gc.get_threshold())))
"""


@dataclass
class RealRun:
    """conftest.REAL_RUN's run: its folder (outputs/ below it), the finished process and
    the collector's state after Hydra returned (default and final threshold, frozen)."""

    folder: Path
    proc: subprocess.CompletedProcess
    gc: dict


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> RealRun:
    folder = tmp_path_factory.mktemp("real_run")
    proc = subprocess.run(
        [sys.executable, "-c", GC_AFTER_RUN, str(TRAIN), *REAL_RUN],
        cwd=folder,
        env={**train_env(folder), **AS_A_USER_SEES_IT},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return RealRun(folder, proc, json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def train_help(tmp_path_factory) -> str:
    """What `python train.py --help` prints, run from a folder outside the repository (read
    by the test of the groups it lists and the test of the sweeps it finds from anywhere)."""
    return run_train(tmp_path_factory.mktemp("help"), "--help").stdout


def run_dirs(tmp_path: Path) -> list[Path]:
    """Single-run directories under tmp_path/outputs/runs, oldest first."""
    return sorted(p.parent for p in (tmp_path / "outputs" / "runs").glob("*/*/results.json"))


def latest_results(tmp_path: Path) -> tuple[Path, dict]:
    run_dir = run_dirs(tmp_path)[-1]
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.fixture
def compose(tmp_path):
    """compose(overrides) -> the composed config, with HydraConfig set like in a real run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from autotimm.app.resolvers import register_resolvers

    register_resolvers()
    os.environ.setdefault("WANDB_MODE", "offline")

    def _compose(overrides: list[str] | None = None, run_dir: Path | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = hydra_compose(
                "config",
                overrides=[f"paths.output_dir={tmp_path}", *(overrides or [])],
                return_hydra_config=True,
            )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir or tmp_path / "run")
            cfg.hydra.job.override_dirname = ""
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


# What stays light on import, asked of one fresh interpreter in steps (each answer is read
# by its own module's test): a new interpreter costs seconds, torch's import most of them.
IMPORT_PROBE = """
import json, sys

found = {}
import autotimm

heavy = ["torch", "timm", "lightning", "wandb", "matplotlib", "optuna"]
found["autotimm"] = sorted(m for m in heavy if m in sys.modules)
from autotimm.startup import scipy_signal_deferred

with scipy_signal_deferred():  # train.py's way (tests/test_lean_imports.py reads it)
    import lightning, torchmetrics
found["lightning"] = {"imported_with_lightning": "scipy.signal" in sys.modules}
import scipy.signal  # what a later user of scipy gets

found["lightning"].update(
    real_module=hasattr(scipy.signal, "windows") and hasattr(scipy.signal, "convolve"),
    window=[round(float(x), 4) for x in scipy.signal.windows.hamming(3)],
)
import autotimm.data

found["autotimm.data"] = sorted(m for m in ("sklearn", "pandas") if m in sys.modules)
from autotimm.data.sources import SourceOptions, load_digits

splits = load_digits(SourceOptions())
found["digits"] = [len(splits.train) + len(splits.val) + len(splits.test), "sklearn" in sys.modules]
model = autotimm.ImageClassifier("resnet18", num_classes=3, metrics=[])
found["model"] = [type(model).__name__, model.head.fc.out_features]
print(json.dumps(found))
"""


@pytest.fixture(scope="session")
def import_probe() -> dict:
    """IMPORT_PROBE's answers: {"autotimm": heavy modules loaded, "autotimm.data": ...}."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class AppRun:
    """What `python train.py` would have given: exit code, printed text, run directory."""

    code: int
    output: str  # stdout + stderr, whitespace runs collapsed (rich wraps long lines)
    run_dir: Path

    def results(self) -> dict:
        return json.loads((self.run_dir / "results.json").read_text())


@pytest.fixture
def run_app(compose, capsys, monkeypatch, tmp_path):
    """run_app(*overrides, name="run") -> AppRun: train.py's app in this process.

    Hydra's composition errors give what train.py prints for them (their message); the
    run itself goes through `autotimm.app.run.main`, so user errors exit 1 with one short line.
    """
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from autotimm.app.run import main

    for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything's, restored after
        monkeypatch.delenv(key, raising=False)

    def _run(*overrides: str, name: str = "run") -> AppRun:
        run_dir = tmp_path / name
        capsys.readouterr()
        try:
            cfg = compose(list(overrides), run_dir=run_dir)
        except HydraException as exc:
            return AppRun(1, " ".join(str(exc).split()), run_dir)
        with open_dict(cfg):
            del cfg["hydra"]  # like Hydra's run_job: the task gets its config without it
        try:
            main(cfg)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return AppRun(code, " ".join((captured.out + captured.err).split()), run_dir)

    return _run


# -- pytest-xdist: `make test` runs the default suite in two worker processes --------------
#
# (-n 2 --dist loadgroup; a plain `pytest` runs in one process and ignores all this.)
# Tests marked `xdist_group(AT_ONCE)` start several processes at once and assert how they
# overlapped or waited for each other (trials on simulated GPUs, submitit jobs, benchmarks
# started together, GPU lock files): they run one after another in one worker, never two
# such crowds side by side on a 2-core machine. Tests that share a module- or session-scoped
# fixture of tests/ (a trained run, a sweep, the import probe) also stay in one worker, so
# no fixture is built twice: the hooks below group them and refuse a split.
#
# xdist's loadgroup reads each test's group from a suffix it adds to the test's node id,
# which pytest 9.2's structured node ids silently drop (pytest-xdist#1386: every test is
# then handed out on its own). So the workers write each test's group to a file and the
# scheduler below reads it there; with a pytest where the suffix works, both agree.

AT_ONCE = "processes_at_once"
GROUPS_ENV = "AUTOTIMM_TEST_GROUPS"  # the folder where the workers write the groups
# the long single tests (tens of seconds on 2 cores): handed out first, right after the
# groups, so that both workers finish at about the same time
LONG_FIRST = (
    "tests/test_sweeps.py::test_optuna_sweep_continues_its_study_and_compares",
    "tests/test_app.py::test_backbone_optimizer_scheduler_combinations_run",
    "tests/test_benchmarks.py::test_gpu_all_only_runs_the_named_steps",
    "tests/test_config_validation.py::test_train_py_reports_the_config_error",
    "tests/test_process_gc.py::",
)


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The fixtures of tests/ wider than one test that `item` uses (module ones by module),
    and helpers_inference's trained run (a session-wide cache behind each module's `run`)."""
    from tests import helpers_inference

    shared = set()
    infos = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in getattr(item, "fixturenames", ()):
        for definition in infos.get(name, ()):
            code = getattr(getattr(definition, "func", None), "__code__", None)
            where = Path(code.co_filename) if code is not None else None
            if definition.scope != "function" and where and where.parent == ROOT / "tests":
                shared.add(f"{where.stem if definition.scope != 'session' else 'session'}.{name}")
    module = getattr(item, "module", None)
    if "run" in getattr(item, "fixturenames", ()) and (
        getattr(module, "trained_run", None) is helpers_inference.trained_run
    ):
        shared.add("helpers_inference.trained_run")
    return shared


def xdist_groups(items: list[pytest.Item]) -> dict[str, str]:
    """node id -> xdist group: the test's own mark, else the group of the tests it shares a
    fixture with (fixtures used by one test are joined); tests in neither are left out."""
    parent: dict[str, str] = {}  # union-find over shared fixtures and marked groups

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    plan = []
    for item in items:
        marks = {
            m.args[0] if m.args else m.kwargs["name"] for m in item.iter_markers("xdist_group")
        }
        names = [f"group:{mark}" for mark in sorted(marks)] + sorted(_shared_fixtures(item))
        for name in names[1:]:
            parent[root(name)] = root(names[0])
        plan.append((item, names))
    marked: dict[str, str] = {}  # a joined set -> the mark its tests carry (one at most)
    for _, names in plan:
        for mark in (n.removeprefix("group:") for n in names if n.startswith("group:")):
            if marked.setdefault(root(names[0]), mark) != mark:
                shared = ", ".join(n for n in names if not n.startswith("group:"))
                raise pytest.UsageError(
                    f"xdist groups {marked[root(names[0])]!r} and {mark!r} share a fixture "
                    f"({shared}): their tests must be in one group"
                )
    return {
        item.nodeid: marked.get(root(names[0]), root(names[0])) for item, names in plan if names
    }


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook adds its suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker: one process, any order
        return
    groups = xdist_groups(items)
    for item in items:
        if item.nodeid in groups and not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    folder = os.environ.get(GROUPS_ENV)
    if folder:  # read by the scheduler once every worker has collected
        worker = config.workerinput["workerid"]
        Path(folder, f"{worker}.json").write_text(json.dumps(groups))
    # xdist hands out the groups (most tests first), then the single tests in this order
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))


def pytest_configure(config: pytest.Config) -> None:
    """The controller of an xdist run: a fresh folder for the workers' groups."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="autotimm-test-groups-")
    os.environ[GROUPS_ENV] = folder  # the workers start later, with this environment
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    config.add_cleanup(lambda: os.environ.pop(GROUPS_ENV, None))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup's scheduler, taking each test's group from the workers' files."""
    if config.getvalue("dist") != "loadgroup" or not os.environ.get(GROUPS_ENV):
        return None
    from xdist.scheduler import LoadGroupScheduling

    folder = Path(os.environ[GROUPS_ENV])

    class FileGroupScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected (and written) by now
                self.groups = {}
                for path in sorted(folder.glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    return FileGroupScheduling(config, log)
