"""Schedulers that re-size themselves when a run resumes with another length.

Resuming (`Trainer.fit(ckpt_path=...)`, `python train.py ckpt_path=...`) restores each
scheduler's saved state, and with it the length the first run planned. A run resumed
with more (or fewer) epochs would then climb back up (cosine) or fail ("Tried to step N
times", onecycle). The schedulers `autotimm.optim.factory` builds re-size on load instead:

    The rest of the schedule is stretched (or squeezed) over the steps now left. The lr
    continues from exactly where it stopped, keeps the schedule's shape (cosine keeps
    annealing, onecycle finishes its phase, step and multistep move their remaining
    decays proportionally, cosine_with_restarts stretches its cycles), and the new last
    step trains at the lr the schedule's last step has. It never jumps.

Only lengths sized from the run are re-sized: a length set in scheduler_kwargs (T_max,
total_steps, step_size, milestones, t_initial) is kept, as are exponential, plateau and
custom schedulers, which do not depend on the run length. A checkpoint saved after its
schedule ended continues at the lr of the schedule's last step (a warning says so).

How: each scheduler maps the run's step to a position on the schedule it was built for
(the "warp", identity until a resize) and computes the lr there in closed form.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.optim.lr_scheduler as lr_scheduler
from timm.scheduler import CosineLRScheduler

from autotimm.private_apis import CLOSED_FORM_LR, LAST_LR, lr_in_step

log = logging.getLogger(__name__)

# torch's marker for "get_lr is called by step()" (private: no marker if it moves)
_IN_STEP = lr_in_step()
# torch's closed-form lr of these schedulers (private), looked up once
_COSINE_CLOSED_FORM = getattr(lr_scheduler.CosineAnnealingLR, CLOSED_FORM_LR)
_STEP_CLOSED_FORM = getattr(lr_scheduler.StepLR, CLOSED_FORM_LR)
_MULTISTEP_CLOSED_FORM = getattr(lr_scheduler.MultiStepLR, CLOSED_FORM_LR)

# (run step at the resize, its schedule position, positions per run step, last position)
Warp = tuple[float, float, float, float]


def position(warp: Warp | None, step: float) -> float:
    """Where run step `step` is on the schedule."""
    if warp is None:
        return step
    anchor, at, scale, stop = warp
    return min(at + (step - anchor) * scale, stop)


def stretched(warp: Warp | None, step: float, old_end: float, new_end: float) -> Warp | None:
    """The warp for a run re-sized from `old_end` to `new_end` steps at step `step` (the
    next one to run): that step keeps its schedule position and the run's last step
    (`new_end - 1`) gets the position of the old plan's last step. A schedule that had
    finished stays at its last step's position. Unchanged when the length is the same or
    at most one step is left."""
    if new_end == old_end or new_end - 1 <= step:
        return warp
    here, last = position(warp, step), position(warp, old_end - 1)
    if here >= last:
        return (float(step), last, 0.0, last)
    return (float(step), here, (last - here) / (new_end - 1 - step), position(warp, old_end))


class RunSized:
    """What a re-sizable scheduler knows about the run (saved with its state)."""

    run_end: float | None = None  # the run's last step, in this scheduler's own steps
    sized_from_run: bool = False  # False: the user set the length; it is kept
    warp: Warp | None = None

    def mark_run(self, run_end: float, sized_from_run: bool) -> None:
        self.run_end, self.sized_from_run = float(run_end), sized_from_run

    def _resize_on_load(self, state: dict[str, Any], new_end: Any, sized: bool, step: Any) -> None:
        """After the saved state is loaded: re-size to `new_end` (see the module doc)."""
        old_end = state.get("run_end", self._saved_length(state))
        self.sized_from_run = sized
        self.run_end = new_end
        name = type(self).__name__
        if new_end is None or old_end is None or step is None or new_end == old_end:
            if new_end is not None and old_end is None:
                log.warning("%s: the checkpoint does not say its run length; not re-sized", name)
            return
        if not sized:
            log.warning(
                "%s keeps the length set in scheduler_kwargs; the resumed run ends at step %s "
                "of this scheduler, the schedule was planned for %s",
                *(name, new_end, old_end),
            )
            return
        finished = position(self.warp, step) >= position(self.warp, old_end - 1)
        self.warp = stretched(self.warp, step, old_end, new_end)
        if finished:
            log.warning(
                "%s had finished its schedule when the checkpoint was saved: the resumed run "
                "continues at the lr of its last step (start a new run for a new schedule)",
                name,
            )
            # the saved lr is the one after the last step (0 for cosine): train at the last one
            self._set_lrs(self._lrs_at(step))
        log.info("%s re-sized from %s to %s steps at step %s", name, old_end, new_end, step)

    def _saved_length(self, state: dict[str, Any]) -> Any:
        """The planned length in checkpoints written before run_end was saved."""
        return None

    def _lrs_at(self, step: float) -> list[float]:
        raise NotImplementedError

    def _set_lrs(self, lrs: list[float]) -> None:
        raise NotImplementedError


class _TorchRunSized(RunSized):
    """Mixin for torch LRSchedulers: lr in closed form at the warped position."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        new_end, sized = self.run_end, self.sized_from_run
        super().load_state_dict(state_dict)  # type: ignore[misc]
        self._resize_on_load(state_dict, new_end, sized, state_dict.get("last_epoch"))

    def get_lr(self) -> list[float]:
        if self.warp is None:
            return super().get_lr()  # type: ignore[misc]
        return self._lr_at_warp()

    def _get_closed_form_lr(self) -> list[float]:
        return self._lr_at_warp()

    def _lr_at_warp(self) -> list[float]:
        return self._lrs_at(self.last_epoch)

    def _lrs_at(self, step: float) -> list[float]:
        real = self.last_epoch
        self.last_epoch = position(self.warp, step)
        try:
            with _IN_STEP(self):  # OneCycleLR's get_lr warns when called outside step()
                return self._closed_form()
        finally:
            self.last_epoch = real

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        setattr(self, LAST_LR, list(lrs))

    def _closed_form(self) -> list[float]:
        raise NotImplementedError


class CosineAnnealingLR(_TorchRunSized, lr_scheduler.CosineAnnealingLR):
    """torch's CosineAnnealingLR, re-sized on resume (see the module doc)."""

    def _closed_form(self) -> list[float]:
        return _COSINE_CLOSED_FORM(self)

    def _saved_length(self, state: dict[str, Any]) -> Any:
        return state.get("T_max")


class OneCycleLR(_TorchRunSized, lr_scheduler.OneCycleLR):
    """torch's OneCycleLR, re-sized on resume (see the module doc)."""

    def _closed_form(self) -> list[float]:
        return lr_scheduler.OneCycleLR.get_lr(self)  # closed form already

    def _saved_length(self, state: dict[str, Any]) -> Any:
        return state.get("total_steps")


class StepLR(_TorchRunSized, lr_scheduler.StepLR):
    """torch's StepLR, re-sized on resume (see the module doc)."""

    def _closed_form(self) -> list[float]:
        return _STEP_CLOSED_FORM(self)


class MultiStepLR(_TorchRunSized, lr_scheduler.MultiStepLR):
    """torch's MultiStepLR, re-sized on resume (see the module doc)."""

    def _closed_form(self) -> list[float]:
        return _MULTISTEP_CLOSED_FORM(self)


class CosineRestarts(RunSized, CosineLRScheduler):
    """timm's CosineLRScheduler (per update), re-sized on resume (see the module doc)."""

    last_update: int | None = None

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        self.last_update = num_updates
        super().step_update(num_updates, metric)

    def _get_lr(self, t: float) -> list[float]:
        return super()._get_lr(position(self.warp, t))

    def _lrs_at(self, step: float) -> list[float]:
        return self._get_lr(step)

    def _set_lrs(self, lrs: list[float]) -> None:
        self.update_groups(lrs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        new_end, sized = self.run_end, self.sized_from_run
        super().load_state_dict(state_dict)
        self._resize_on_load(state_dict, new_end, sized, state_dict.get("last_update"))


# torch class name -> its re-sizable subclass (schedulers whose length follows the run)
RESIZABLE: dict[str, type] = {
    "CosineAnnealingLR": CosineAnnealingLR,
    "OneCycleLR": OneCycleLR,
    "StepLR": StepLR,
    "MultiStepLR": MultiStepLR,
}
