"""Checks of a sweep (`python train.py -m ...`) before any trial starts.

`MultirunChecks` is a Hydra callback (conf/hydra/default.yaml: `hydra.callbacks`): Hydra
calls it with the composed config before the sweeper and launcher exist, so a sweep that
cannot work stops at once with one short message. Every sweep trial also calls
`check_one_process_per_trial` (autotimm.app.run_wrapper), for sweeps started without it.
Light imports only: it runs at the start of every sweep.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from autotimm.sweep.cross_validation import check_cross_validation
from autotimm.user_errors import UserError, user_errors_reported

# Lightning strategies that start one process per device
_MULTI_PROCESS = ("ddp", "fsdp", "deepspeed")


def _device_count(devices: Any) -> int | None:
    """How many devices `trainer.devices` asks for (-1: all of them; None: 'auto')."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return None


def check_one_process_per_trial(config: DictConfig) -> None:
    """Refuse a data-parallel trainer (trainer=ddp, devices > 1) in a sweep."""
    trainer = config.get("trainer") or {}
    strategy = str(OmegaConf.select(trainer, "strategy", default="auto"))
    devices = OmegaConf.select(trainer, "devices", default=1)
    count = _device_count(devices)
    if not strategy.lower().startswith(_MULTI_PROCESS) and count in (None, 0, 1):
        return
    raise UserError(
        f"trainer.strategy={strategy!r} trainer.devices={devices!r}: a sweep cannot train "
        "its trials with DDP (Lightning starts the other processes by running the command "
        "line again, which inside a sweep starts the sweep again: duplicated trials, hangs). "
        "A sweep runs one single-device trial per GPU instead: drop trainer=ddp (sweep.gpus "
        "picks the GPUs), then train the best trial's settings as one DDP run without -m: "
        "python train.py trainer=ddp <its overrides>"
    )


class MultirunChecks(Callback):
    """Hydra callback: the checks above, at the start of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from autotimm.startup import freeze_imported
        from autotimm.sweep.launchers import IN_PROCESS, launcher_kind

        # a sweep whose trials run in other processes (joblib, SLURM, Ray) never reaches
        # train(): its collector gets its usual thresholds back here; with Hydra's basic
        # launcher the first trial's train() freezes, after torch and Lightning are imported
        launcher = OmegaConf.select(config, "hydra.launcher._target_", default=None)
        if launcher_kind(launcher) != IN_PROCESS:
            freeze_imported()
        with user_errors_reported(trial_raises=False):  # the sweep itself: exit 1, one line
            check_one_process_per_trial(config)
            check_cross_validation(config, config.get("hydra"))  # sweep.cross_validate
