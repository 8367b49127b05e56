"""What a run optimises: `optimized_metric` and `optimized_mode`, one value or a list.

`optimized_metric=val/accuracy optimized_mode=max` is one objective. Lists make a
multi-objective sweep: `optimized_metric=[val/accuracy,model/latency_ms]
optimized_mode=[max,min]`. Any number of the run record can be an objective
(`val/...`, `test/...`, `model/params_m`, `model/gflops`, `model/latency_ms`,
`model/throughput_img_s`, `wall_time_s`, ...). The first one picks the best epoch and
the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autotimm.user_errors import UserError

MODES = ("max", "min")


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    mode: str

    @property
    def direction(self) -> str:
        return f"{self.mode}imize"


def _as_list(value: Any) -> list[Any]:
    from omegaconf import ListConfig

    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def objective_specs(metric: Any, mode: Any) -> list[ObjectiveSpec]:
    """The objectives, checked: one mode per metric, each `max` or `min`."""
    names, modes = _as_list(metric), _as_list(mode)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(
            f"optimized_metric={metric}: give a metric name or a list of them "
            "(e.g. val/accuracy or [val/accuracy,model/latency_ms])"
        )
    if len(modes) == 1 and len(names) > 1:
        modes = modes * len(names)
    if len(modes) != len(names):
        raise UserError(
            f"optimized_mode={mode} has {len(modes)} entries for optimized_metric={metric} "
            f"({len(names)}); give one mode per metric, each one of {list(MODES)}"
        )
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UserError(f"optimized_mode={mode}: {bad} not accepted; accepted: {list(MODES)}")
    if len(set(names)) != len(names):
        raise UserError(f"optimized_metric={metric} names a metric twice")
    return [ObjectiveSpec(n, m) for n, m in zip(names, modes, strict=True)]


def first(value: Any) -> Any:
    """The first objective's metric or mode (what checkpointing monitors)."""
    return _as_list(value)[0]


def directions(mode: Any) -> Any:
    """Optuna's direction(s) for `optimized_mode`: "maximize", or a list for several."""
    found = [f"{m}imize" for m in _as_list(mode)]
    return found[0] if len(found) == 1 else found


def check_logged(metric: Any, mode: Any, model: Any) -> None:
    """Refuse, before training, a `val/...` or `test/...` objective the model never logs
    (else Lightning's checkpointing fails after the first epoch, or the sweep gets nothing)."""
    from autotimm.user_errors import UserError

    for spec in objective_specs(metric, mode):
        stage, _, name = spec.name.partition("/")
        if stage not in ("val", "test"):
            continue  # model/..., wall_time_s, ...: from the run record, checked at its end
        logged = ["loss", *model.metrics.get(stage)]
        if name not in logged:
            raise UserError(
                f"optimized_metric={spec.name!r}: the model logs no such {stage} metric "
                f"(left out or not configured for {stage}); accepted: "
                f"{[f'{stage}/{n}' for n in logged]}, or model/..., wall_time_s, epochs"
            )
