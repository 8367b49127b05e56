"""Sweeps: `python train.py -m +sweeps=...` from another folder, the stored study, failures,
one GPU per trial (simulated), W&B grouping, SLURM/submitit and Ray launcher configs.

The end-to-end tests run real sweeps of a tiny resnet18 on synthetic 32x32 images through
subprocesses started outside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TRAIN, train_env

# a trial: one epoch of two batches of a tiny synthetic set, no test phase
TINY = [
    "data=synthetic",
    "data.synthetic_size=64",
    "data.batch_size=16",
    "data.image_size=32",
    "backbone=resnet18",
    "metrics=minimal",
    "logger=csv",
    "callbacks=quiet",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
]
# a cheaper trial where the sweep machinery is the subject, not the model: timm's smallest
# resnet, no cost measurement (about a second less per trial)
TINIEST = [*TINY, "backbone.model_name=test_resnet", "measure_cost=false"]
# conf/hydra/launcher/ray_gpu.yaml on the test machines (no GPU, 2 cores)
RAY_ON_CPU = [
    "hydra/launcher=ray_gpu",
    "hydra.launcher.ray.remote.num_gpus=0",
    "hydra.launcher.ray.remote.num_cpus=1",
    "+hydra.launcher.ray.init.num_cpus=2",
]
SWEPT = ("optimizer.lr", "regularization.mixup_alpha", "regularization.label_smoothing")


def sweep(tmp_path: Path, *overrides: str, env: dict | None = None, check: bool = True):
    """`python <repo>/train.py -m <overrides>`, run from tmp_path (not the repository)."""
    environ = train_env(tmp_path)
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "-m", *overrides],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"sweep {' '.join(overrides)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def sweep_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "outputs" / "sweeps" / name


def load_study(folder: Path, name: str):
    import optuna

    from autotimm.sweep.storage import local_study, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(local_study(folder)))


def trial_results(folder: Path) -> dict[int, dict]:
    found = {}
    for path in sorted(folder.glob("trial_*/results.json")):
        results = json.loads(path.read_text())
        found[results["sweep"]["trial"]] = results
    return found


# -- composing from anywhere -----------------------------------------------------------


def compose_cfg(tmp_path: Path, *overrides: str, part: str = "job") -> dict:
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *overrides, "--cfg", part],
        cwd=tmp_path,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


def compose_here(compose, *overrides: str, part: str = "job") -> dict:
    """What `train.py <overrides> --cfg <part>` prints, composed in this process."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose(list(overrides))
    if part == "hydra":
        return {"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)}
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=False)


def test_sweeps_compose_from_another_folder(tmp_path, compose, monkeypatch, train_help):
    """sweeps/ is on Hydra's search path whatever the cwd (a missing group would not fail).

    One real `train.py --cfg` from tmp_path; the other configs are composed in this process,
    also from tmp_path.
    """
    hydra = compose_cfg(tmp_path, "+sweeps=lr_mixup_ls", part="hydra")["hydra"]
    sweeper = hydra["sweeper"]
    assert sweeper["_target_"].endswith("AutotimmOptunaSweeper")
    assert sweeper["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    assert sweeper["sampler"]["seed"] == "${seed}"
    assert sweeper["direction"] == "${autotimm.directions:${optimized_mode}}"
    assert sweeper["storage"] is None  # a journal file in the sweep folder
    assert sweeper["n_trials"] >= 20
    params = sweeper["params"]
    assert params["optimizer.lr"].startswith("tag(log, interval(")
    assert set(params) == set(SWEPT)
    assert hydra["launcher"]["_target_"].endswith("JoblibLauncher")

    monkeypatch.chdir(tmp_path)
    job = compose_here(compose, "+sweeps=lr_mixup_ls", "backbone=vit_s16")
    assert job["sweep"]["name"] == "lr_mixup_ls" and job["sweep"]["job_type"] == "sweep"
    assert job["backbone"]["model_name"].startswith("vit_small")
    assert job["logger"]["wandb"]["group"] == "${sweep.name}"

    quick = compose_here(compose, "+sweeps=quick")
    assert quick["sweep"]["name"] == "quick" and quick["trainer"]["max_epochs"] <= 5
    grid = compose_here(compose, "+sweeps=backbone_optimizer", part="hydra")["hydra"]
    assert grid["sweeper"]["_target_"].endswith("AutotimmBasicSweeper")
    assert set(grid["sweeper"]["params"]) == {"backbone", "optimizer"}
    for launcher in ("slurm_gpu", "submitit_local"):
        conf = compose_here(compose, "+sweeps=quick", f"hydra/launcher={launcher}", part="hydra")
        assert "submitit" in conf["hydra"]["launcher"]["_target_"]
    slurm = compose_here(compose, "hydra/launcher=slurm_gpu", part="hydra")["hydra"]["launcher"]
    assert slurm["gpus_per_node"] == 1 and slurm["max_num_timeout"] > 0
    assert slurm["additional_parameters"]["requeue"] is True and slurm["array_parallelism"] > 0

    # `train.py --help` from another folder (conftest.train_help, shared with test_app)
    assert "sweeps: backbone_optimizer, kfold, lr_mixup_ls, pareto, quick" in train_help


# -- the device plan and the GPU claim ---------------------------------------------------


def test_device_plan_one_trial_per_gpu():
    from autotimm.sweep.devices import plan_devices

    four = ["0", "1", "2", "3"]
    plan = plan_devices(available=four)
    assert plan.gpus == tuple(four) and plan.n_jobs == 4 and not plan.simulated
    narrowed = plan_devices(gpus=[0, 2], available=four)
    assert narrowed.gpus == ("0", "2") and narrowed.n_jobs == 2
    assert plan_devices(gpus="1,3", available=four).gpus == ("1", "3")
    assert plan_devices(gpus=[0, 2], n_jobs=1, available=four).n_jobs == 1
    cpu = plan_devices(available=[])
    assert cpu.gpus == () and cpu.n_jobs == 1  # one after another
    assert plan_devices(available=[], cpu_workers=2).n_jobs == 2
    assert plan_devices(gpus=[], available=four).gpus == ()  # [] forces the CPU
    simulated = plan_devices(simulate_gpus=3, sweep_dir="/tmp/x", available=[])
    assert simulated.gpus == ("0", "1", "2") and simulated.simulated
    assert simulated.lock_dir == "/tmp/x/.gpu_locks"
    with pytest.raises(ValueError, match="at most 2 run at once"):
        plan_devices(gpus=[0, 2], n_jobs=3, available=four)
    with pytest.raises(ValueError, match=r"names \['7'\]"):
        plan_devices(gpus=[0, 7], available=four)
    with pytest.raises(ValueError, match="no GPU is visible"):
        plan_devices(gpus=[0], available=[])


def test_plan_for_sweep_follows_the_launcher(monkeypatch, tmp_path):
    """Local launchers get a GPU pool to claim from; SLURM/Ray pin GPUs themselves."""
    from omegaconf import OmegaConf

    from autotimm.sweep import devices as gpus

    for key in (gpus.ENV_POOL, gpus.ENV_SIMULATED, gpus.ENV_LOCK_DIR, gpus.ENV_SIMULATE):
        monkeypatch.delenv(key, raising=False)

    def config(target: str, **sweep):
        base = {"gpus": None, "n_jobs": None, "cpu_workers": 1, "simulate_gpus": 0}
        return OmegaConf.create(
            {
                "sweep": {**base, **sweep},
                "hydra": {
                    "sweep": {"dir": str(tmp_path)},
                    "launcher": {"_target_": target, "array_parallelism": 8},
                },
            }
        )

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    plan = gpus.plan_for_sweep(config(joblib, simulate_gpus=3))
    assert plan.n_jobs == 3 and os.environ[gpus.ENV_POOL] == "0,1,2"
    assert os.environ[gpus.ENV_SIMULATED] == "1"
    assert os.environ[gpus.ENV_LOCK_DIR] == str(tmp_path / ".gpu_locks")
    monkeypatch.setenv(gpus.ENV_SIMULATE, "2")  # the environment switch
    assert gpus.plan_for_sweep(config(joblib)).gpus == ("0", "1")
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert gpus.plan_for_sweep(config(basic)).n_jobs == 1  # in-process, one at a time
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    plan = gpus.plan_for_sweep(config(slurm))
    assert plan.pinned_by_launcher and plan.n_jobs == 8  # array_parallelism
    assert gpus.ENV_POOL not in os.environ  # SLURM jobs must not claim from our pool
    assert gpus.plan_for_sweep(config(slurm, n_jobs=3)).n_jobs == 3


def test_visible_gpus_follow_cuda_visible_devices():
    from autotimm.sweep.devices import visible_gpus

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]


CLAIMER = """
import os, sys, time
from autotimm.sweep.devices import claim_gpu
claim = claim_gpu(wait_s=float(sys.argv[1]), poll_s=0.05)
print(claim.gpu, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
"""


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_gpu_claims_are_exclusive_between_processes(tmp_path):
    """Two processes get two different GPUs; a third waits until one of them exits."""
    env = dict(os.environ, AUTOTIMM_SWEEP_GPUS="0,1", AUTOTIMM_SWEEP_LOCK_DIR=str(tmp_path))
    env.pop("AUTOTIMM_SWEEP_SIMULATED", None)
    release = [tmp_path / f"release{i}" for i in range(3)]

    def start(i: int, wait: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(wait), str(release[i])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first, second = start(0, 30), start(1, 30)
    got = {first.stdout.readline().split()[0], second.stdout.readline().split()[0]}
    assert got == {"0", "1"}
    blocked = start(2, 0.5)  # both GPUs held: gives up after half a second
    assert blocked.wait(timeout=60) != 0
    assert "no free GPU" in blocked.stderr.read()
    waiting = start(2, 60)
    time.sleep(0.5)
    release[0].touch()  # the first process exits: its GPU is free again
    first.wait(timeout=30)
    line = waiting.stdout.readline().split()
    assert line and line[0] == line[1] and line[0] in got
    release[1].touch()
    release[2].touch()
    for proc in (second, waiting):
        proc.wait(timeout=30)


def test_claim_is_kept_per_process_and_simulation_pins_the_cpu(tmp_path):
    from autotimm.sweep import devices as gpus

    environ = {
        gpus.ENV_POOL: "0,1",
        gpus.ENV_LOCK_DIR: str(tmp_path),
        gpus.ENV_SIMULATED: "1",
    }
    try:
        claim = gpus.claim_gpu(environ)
        assert claim is not None and claim.simulated
        assert environ["CUDA_VISIBLE_DEVICES"] == ""  # a pretend GPU trains on the CPU
        assert environ[gpus.ENV_SIMULATED_GPU] == claim.gpu
        assert gpus.claim_gpu(environ) is claim  # a reused worker keeps its GPU
        assert json.loads(Path(claim.lock_path).read_text())["pid"] == os.getpid()
    finally:
        gpus.release_claim()
    assert gpus.claim_gpu({}) is None  # not a sweep trial: nothing to claim


# -- the study: counting, interrupted trials ---------------------------------------------


def test_interrupted_trials_are_failed_and_run_again(tmp_path):
    import optuna

    from autotimm.sweep import recovery
    from autotimm.sweep import trials as trials_mod
    from autotimm.sweep.storage import absolute_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = absolute_storage(f"sqlite:///{tmp_path / 'sub' / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
    study.tell(done, 0.5)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
    orphan.set_user_attr(trials_mod.ATTR_HOST, __import__("socket").gethostname())
    orphan.set_user_attr(trials_mod.ATTR_PID, dead.pid)
    alive = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})
    alive.set_user_attr(trials_mod.ATTR_HOST, "another-machine")
    alive.set_user_attr(trials_mod.ATTR_PID, 1)
    alive.set_user_attr(trials_mod.ATTR_HEARTBEAT, time.time())

    assert recovery.recover_interrupted(study) == [orphan.number]
    trials = study.get_trials()
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert trials[orphan.number].user_attrs["interrupted"] is True
    assert trials[alive.number].state == optuna.trial.TrialState.RUNNING  # still beating
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == orphan.params
    counts = trials_mod.count_trials(trials)
    assert (counts.finished, counts.interrupted, counts.running) == (1, 1, 1)
    stale = trials[alive.number]
    stale.user_attrs[trials_mod.ATTR_HEARTBEAT] = time.time() - 2 * recovery.STALE_AFTER_S
    assert recovery.is_stale(stale)


def test_nonfinite_loss_stops_training():
    import lightning as L
    import torch

    from autotimm.training.callbacks import NonFiniteLossError, NonFiniteLossGuard

    class Exploding(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):
            return self.w.sum() * (float("nan") if batch_idx == 1 else 1.0)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=2)

    def fit(module):
        L.Trainer(
            max_epochs=1,
            callbacks=[NonFiniteLossGuard(check_every_n_steps=2)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(module)

    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        fit(Exploding())
    assert issubclass(NonFiniteLossError, ValueError)  # a bad-hyperparameter error


# -- real sweeps ---------------------------------------------------------------------------


def test_optuna_sweep_continues_its_study_and_compares(tmp_path):
    """2 trials; the same command with n_trials=3 adds exactly one; compare ranks all 3."""
    folder = sweep_dir(tmp_path, "quick")
    sweep(tmp_path, "+sweeps=quick", "hydra.sweeper.n_trials=2", *TINIEST)

    summary = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert summary["name"] == "optuna" and summary["study_name"] == "quick"
    assert set(summary["best_params"]) == set(SWEPT)
    assert summary["trials"]["complete"] == 2 and summary["failures"] == []
    assert summary["storage"] == f"journal:{folder / 'study.journal'}"
    study = load_study(folder, "quick")
    assert study.metric_names == ["val/accuracy"]  # named for Optuna's plots and the dashboard
    first = study.get_trials()
    assert [t.state.name for t in first] == ["COMPLETE"] * 2
    assert summary["best_value"] == pytest.approx(study.best_value)
    # the best trial's model card, copied to the sweep folder
    best_run = folder / f"trial_{study.best_trial.number:04d}"
    assert (folder / "MODEL_CARD.md").read_text() == (best_run / "MODEL_CARD.md").read_text()
    for trial in first:
        run_dir = folder / f"trial_{trial.number:04d}"
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["optimizer"]["lr"] == pytest.approx(trial.params["optimizer.lr"])
        regularization = config["regularization"]
        for key in ("mixup_alpha", "label_smoothing"):
            assert regularization[key] == pytest.approx(trial.params[f"regularization.{key}"])
        assert 1e-4 <= trial.params["optimizer.lr"] <= 3e-2
        results = json.loads((run_dir / "results.json").read_text())
        assert results["status"] == "completed" and results["sweep"]["trial"] == trial.number
        assert results["objective"]["value"] == pytest.approx(trial.value)
        assert results["sweep"]["params"]["optimizer.lr"] == pytest.approx(
            trial.params["optimizer.lr"]
        )
    assert len({t.params["optimizer.lr"] for t in first}) == 2

    sweep(tmp_path, "+sweeps=quick", "hydra.sweeper.n_trials=3", *TINIEST)
    trials = load_study(folder, "quick").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # one more, none redone
    assert [t.params for t in trials[:2]] == [t.params for t in first]
    assert trials[2].params not in [t.params for t in first]  # reseeded: no repeats
    assert sorted(trial_results(folder)) == [0, 1, 2]

    from autotimm.compare import compare

    report = compare(folder, show=False)
    assert len(report["rows"]) == 3 and all(r["status"] == "completed" for r in report["rows"])
    objectives = [row["objective"] for row in report["rows"]]
    assert objectives == sorted(objectives, reverse=True)
    assert report["files"]["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "compare.csv").read_text().count("\n") == 4  # header + 3 runs
    best = yaml.safe_load(report["files"]["best_config"].read_text())
    assert best["optimizer"]["lr"] == pytest.approx(report["rows"][0]["optimizer.lr"])
    assert best["sweep"]["name"] is None and best["defaults"][0] == {"hydra": "default"}


def _wandb_inspect(path: Path, *flags: str) -> str:
    wandb_cli = Path(sys.executable).with_name("wandb")
    proc = subprocess.run(
        [str(wandb_cli), "leet", "inspect", *flags, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


LRS = (0.001, 0.003, 1e30, 0.0003)  # 1e30: the training loss becomes NaN


@pytest.fixture(scope="module")
def simulated_sweep(tmp_path_factory) -> tuple[Path, object]:
    """One sweep for the tests below: 2 simulated GPUs, 4 trials (one failing), W&B on.

    The grid sampler runs each learning rate of LRS once, in its own order.
    """
    tmp_path = tmp_path_factory.mktemp("simulated")
    sweep(
        tmp_path,
        "+sweeps=quick",
        "sweep.name=sim",
        "hydra/sweeper/sampler=grid",
        f"optimizer.lr=choice({','.join(map(str, LRS))})",
        "regularization.mixup_alpha=0.0",
        "regularization.label_smoothing=0.0",
        *TINIEST,
        "logger=default",  # CSV + W&B (offline)
        "trainer.limit_train_batches=3",
        env={"AUTOTIMM_SIMULATE_GPUS": "2"},
    )
    folder = sweep_dir(tmp_path, "sim")
    return folder, load_study(folder, "sim")


@pytest.mark.xdist_group("processes_at_once")  # one at a time: tests/conftest.py AT_ONCE
def test_simulated_gpus_run_one_trial_each_at_a_time(simulated_sweep):
    """AUTOTIMM_SIMULATE_GPUS=2: two trials at once, each on its own (pretend) GPU."""
    folder, _ = simulated_sweep
    results = trial_results(folder)
    assert sorted(results) == [0, 1, 2, 3]
    spans = []
    for result in results.values():  # failed trials record their GPU too
        info = result["sweep"]
        assert result["gpu_simulated"] is True and result["device"] == "cpu"
        assert info["gpu"] == result["gpu"]
        spans.append((info["started_at"], info["finished_at"], result["gpu"], info["worker_pid"]))
    assert {gpu for _, _, gpu, _ in spans} == {"0", "1"}
    overlapping = 0
    for i, (start_a, end_a, gpu_a, _) in enumerate(spans):
        for start_b, end_b, gpu_b, _ in spans[i + 1 :]:
            if start_a < end_b and start_b < end_a:  # ran at the same time
                overlapping += 1
                assert gpu_a != gpu_b, "two trials shared a GPU"
    assert overlapping >= 1, "no two trials ran at the same time"
    worker_gpu = {}
    for _, _, gpu, pid in spans:  # a reused worker keeps its GPU
        assert worker_gpu.setdefault(pid, gpu) == gpu
    assert len(worker_gpu) == 2


def test_failed_trial_is_recorded_and_the_sweep_goes_on(simulated_sweep):
    folder, study = simulated_sweep
    by_lr = {t.params["optimizer.lr"]: t for t in study.get_trials()}
    assert sorted(by_lr) == sorted(LRS)
    failed = by_lr[1e30]
    assert failed.state.name == "FAIL"
    assert "NonFiniteLossError" in failed.user_attrs["failure"]
    assert all(by_lr[lr].state.name == "COMPLETE" for lr in LRS if lr != 1e30)
    results = trial_results(folder)
    assert results[failed.number]["status"] == "failed"
    assert "NaN or infinite" in results[failed.number]["failure"]
    summary = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert summary["trials"]["failed"] == 1 and summary["trials"]["complete"] == 3
    assert [f["trial"] for f in summary["failures"]] == [failed.number]
    assert "NonFiniteLossError" in summary["failures"][0]["reason"]


def test_wandb_runs_of_a_sweep_share_its_group(simulated_sweep):
    folder, study = simulated_sweep
    records, paths = {}, {}
    for trial in study.get_trials():
        run_dir = folder / f"trial_{trial.number:04d}"
        (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        lines = [json.loads(x) for x in _wandb_inspect(path, "--json").splitlines() if x.strip()]
        records[trial.params["optimizer.lr"]] = next(x["run"] for x in lines if x["type"] == "run")
        paths[trial.params["optimizer.lr"]] = (trial, path)
    assert {record["run_group"] for record in records.values()} == {"sim"}
    assert {record["job_type"] for record in records.values()} == {"sweep"}
    trial, path = paths[0.001]
    good = json.loads(_wandb_inspect(path, "--summary", "--json"))
    assert good["summary"]["objective"] == pytest.approx(trial.value)
    assert "lr=0.001" in good["tags"] and "mixup_alpha=0.0" in good["tags"]
    assert good["config"]["optimizer"]["lr"] == pytest.approx(0.001)
    assert good["config"]["sweep"]["params"]["optimizer.lr"] == pytest.approx(0.001)
    assert good["exit_code"] == 0
    bad = json.loads(_wandb_inspect(paths[1e30][1], "--summary", "--json"))
    assert bad["exit_code"] == 1 and bad["state"] == "failed"


@pytest.mark.slow
def test_killed_sweep_resumes_with_its_finished_trials(tmp_path):
    folder = sweep_dir(tmp_path, "quick")
    args = [sys.executable, str(TRAIN), "-m", "+sweeps=quick", "hydra.sweeper.n_trials=3", *TINY]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=train_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (folder / "trial_0001" / ".hydra").is_dir():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, 9)  # mid trial 1
    proc.wait()
    assert load_study(folder, "quick").get_trials()[1].state.name == "RUNNING"

    sweep(tmp_path, "+sweeps=quick", "hydra.sweeper.n_trials=3", *TINY)
    trials = load_study(folder, "quick").get_trials()
    states = [t.state.name for t in trials]
    assert states[0] == "COMPLETE" and states[1] == "FAIL"
    assert trials[1].user_attrs["interrupted"] is True
    assert states.count("COMPLETE") == 3  # trial 0 kept, two more run
    assert trials[2].params == trials[1].params  # the interrupted values ran again


@pytest.mark.slow
def test_sweep_through_submitit_local_executor(tmp_path):
    """hydra-submitit-launcher's local executor: each trial its own submitit job."""
    folder = sweep_dir(tmp_path, "quick")
    sweep(
        tmp_path,
        "+sweeps=quick",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.n_trials=2",
        *TINY,
    )
    assert [t.state.name for t in load_study(folder, "quick").get_trials()] == ["COMPLETE"] * 2
    results = trial_results(folder)
    assert sorted(results) == [0, 1]
    assert len({r["sweep"]["worker_pid"] for r in results.values()}) == 2  # separate jobs
    assert list((folder / ".submitit").iterdir())


@pytest.mark.slow
def test_grid_sweep_lists_failures_and_runs_every_cell(tmp_path):
    proc = sweep(
        tmp_path,
        "+sweeps=backbone_optimizer",
        "backbone=resnet18",
        "optimizer=adamw,sgd",
        "optimizer.lr=0.001,1e30",
        *TINY,
        "trainer.limit_train_batches=3",
        env={"AUTOTIMM_SIMULATE_GPUS": "2"},
        check=False,
    )
    assert proc.returncode != 0  # the grid ran, then reports its failures
    assert "2 run(s) of the grid failed" in proc.stdout + proc.stderr
    (grid,) = sweep_dir(tmp_path, "backbone_optimizer").iterdir()
    statuses = sorted(json.loads(p.read_text())["status"] for p in grid.glob("*/results.json"))
    assert statuses == ["completed", "completed", "failed", "failed"]


@pytest.mark.slow
def test_sweep_through_ray_when_installed(tmp_path):
    """conf/hydra/launcher/ray_gpu.yaml with a local Ray (the optional [ray] extra)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    folder = sweep_dir(tmp_path, "quick")
    sweep(tmp_path, "+sweeps=quick", *RAY_ON_CPU, "hydra.sweeper.n_trials=2", *TINY)
    assert [t.state.name for t in load_study(folder, "quick").get_trials()] == ["COMPLETE"] * 2
