"""Shared fixtures: composing the real config tree and running the real train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    )
    return env


def run_train(
    tmp_path: Path, *overrides: str, check: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `python train.py <overrides>` from tmp_path (not the repo root)."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *overrides],
        cwd=tmp_path,
        env=train_env(tmp_path),
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

    from autotimm.resolvers import register_resolvers

    register_resolvers()
    os.environ.setdefault("WANDB_MODE", "offline")

    def _compose(overrides: list[str] | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = hydra_compose(
                "config",
                overrides=[f"paths.output_dir={tmp_path}", *(overrides or [])],
                return_hydra_config=True,
            )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.override_dirname = ""
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
