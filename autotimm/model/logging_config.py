"""Switches for the extra training diagnostics ImageClassifier logs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from autotimm.user_errors import UserError


@dataclass
class LoggingConfig:
    """Each flag adds one logged key.

    - log_learning_rate -> `train/lr` (every step, first param group)
    - log_gradient_norm -> `train/grad_norm` (global L2 norm before the optimizer step)
    - log_weight_norm -> `train/weight_norm` (global L2 norm of trainable weights)
    - log_confusion_matrix -> `val/confusion_matrix` image, sent to every logger that
      can show images (W&B, TensorBoard)
    """

    log_learning_rate: bool = False
    log_gradient_norm: bool = False
    log_weight_norm: bool = False
    log_confusion_matrix: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: LoggingConfig | dict[str, Any] | None) -> LoggingConfig:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__) - {"_target_"}
            if unknown:
                raise UserError(
                    f"Unknown LoggingConfig option(s) {sorted(unknown)}; "
                    f"accepted: {sorted(cls.__dataclass_fields__)}"
                )
            return cls(**{k: v for k, v in value.items() if k != "_target_"})
        raise UserError(f"logging_config must be a LoggingConfig or dict, got {value!r}")
