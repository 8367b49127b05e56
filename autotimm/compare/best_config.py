"""best_config.yaml: the best run's full config, re-run with one command."""

from __future__ import annotations

from pathlib import Path

import yaml

from autotimm.records.runs import Run

BEST_CONFIG = "best_config.yaml"


def write_best_config(best: Run, folder: Path, repo_train: Path) -> Path | None:
    """The best run's full config as a primary config (`--config-name best_config`)."""
    source = best.run_dir / ".hydra" / "config.yaml"
    if not source.is_file():
        return None
    config = yaml.safe_load(source.read_text()) or {}
    sweep = config.get("sweep")
    if isinstance(sweep, dict):  # a re-run is a run of its own, not a trial of the sweep
        sweep.update(name=None, job_type="train", trial=None, params={}, tags=[])
        for key in ("worker_pid", "started_at", "gpu"):
            sweep.pop(key, None)
    config["ckpt_path"] = None
    value = best.metric(best.objective_name)
    data = config.get("data")
    folded = isinstance(data, dict) and data.get("fold") is not None
    if folded:  # the configuration, trained once on the source's own train/val split
        data.update(fold=None, folds=None)
    what = "configuration (best mean over its folds)" if folded else "run"
    header = (
        f"# The best {what} of {folder} (trial {best.trial}: {best.objective_name} = {value}),\n"
        f"# from {source}; written by `python -m autotimm.compare`. Re-run it with:\n"
        f"#   python {repo_train} --config-dir {folder} --config-name best_config\n"
        "# Values can still be overridden (trainer.max_epochs=50); config groups cannot.\n"
    )
    body = {"defaults": [{"hydra": "default"}, "_self_"], **config}
    path = folder / BEST_CONFIG
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path
