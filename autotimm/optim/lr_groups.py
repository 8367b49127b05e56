"""Per-group learning rates: layer-wise decay (timm's layer grouping) and a backbone factor.

`optimizer.layer_decay=0.75` gives each backbone layer `0.75 ** (depth from the top)` of
the lr, as timm's `create_optimizer_v2(layer_decay=...)` does: the groups come from timm's
`param_groups_layer_decay` on the backbone (its `group_matcher`), the head trains at the
full lr. `backbone_lr_scale` (staged unfreezing) multiplies every backbone group's lr.

The scale is written into each group's `lr` (timm leaves an `lr_scale` key that only its
own schedulers read): torch's schedulers then start every group from its own lr.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from autotimm.checks import ConfigValueError, check_positive

log = logging.getLogger(__name__)


def check_layer_decay(layer_decay: Any) -> None:
    """None (off) or a factor in (0, 1]."""
    if layer_decay is None:
        return
    check_positive("layer_decay", layer_decay)
    if layer_decay > 1:
        raise ConfigValueError(
            "layer_decay", layer_decay, "must be in (0, 1], e.g. 0.75 (null: off)"
        )


def scaled_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    backbone_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` in groups with their own `lr` and weight decay.

    `model` has a `backbone` (a timm model) and other modules (the head); a model without
    one is grouped as a whole by timm.
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        backbone, rest = model, []
    else:
        rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    no_decay = getattr(backbone, "no_weight_decay", lambda: set())()
    if layer_decay is not None:
        groups = param_groups_layer_decay(
            backbone, weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay
        )
    else:
        groups = param_groups_weight_decay(backbone, weight_decay, no_weight_decay_list=no_decay)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0) * backbone_lr_scale
    head = nn.ParameterList([p for p in rest if p.requires_grad])
    for group in param_groups_weight_decay(head, weight_decay):
        groups.append({**group, "lr": lr})
    log.info(
        "optimizer: %d parameter groups, lr from %.3g to %.3g",
        len(groups), min(g["lr"] for g in groups), max(g["lr"] for g in groups),
    )  # fmt: skip
    return [g for g in groups if g["params"]]
