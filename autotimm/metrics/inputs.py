"""What each metric is built with and fed: single-label (softmax) or multi-label (sigmoid).

Single-label metrics get `task="multiclass"`/`num_classes`, softmax probabilities or argmax
labels. Multi-label metrics get `task="multilabel"`/`num_labels`, sigmoid probabilities or
0/1 labels at a threshold (`probs > threshold`, the rule torchmetrics uses), and 0/1 targets.
"""

from __future__ import annotations

from typing import Any

import torch

from autotimm.checks import ConfigValueError

TASKS_FOR_MULTI_LABEL = ("multiclass", "multilabel")


def multi_hot(logits: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """0/1 (long) predictions: sigmoid(logits) > threshold (a float or one per label)."""
    return (logits.float().sigmoid() > threshold).long()


def as_preds(
    logits: torch.Tensor, kind: str, multi_label: bool, threshold: float | torch.Tensor = 0.5
) -> torch.Tensor:
    """The batch in the form a metric takes: `probs`, `labels` or raw `logits`."""
    if kind == "logits":
        return logits
    if not multi_label:
        return logits.float().softmax(dim=-1) if kind == "probs" else logits.argmax(dim=-1)
    return logits.float().sigmoid() if kind == "probs" else multi_hot(logits, threshold)


def reads_only_argmax(metric: Any) -> bool:
    """Whether a single-label metric reads its probabilities only through their argmax:
    torchmetrics' multiclass stat-score metrics (Accuracy, F1Score, Precision, Recall,
    Specificity, ...) at `top_k=1`. Fed the argmax labels instead, they compute the same
    values without the softmax, and the metrics of a stage share one argmax (instead of one
    each). Ties between equal probabilities may resolve differently; between logits, the
    labels keep the larger one. A subclass with its own `update` (which may read the
    probabilities) keeps getting them."""
    from torchmetrics.classification import MulticlassStatScores

    return (
        isinstance(metric, MulticlassStatScores)
        and type(metric).update is MulticlassStatScores.update
        and getattr(metric, "top_k", 1) == 1
    )


def as_targets(target: torch.Tensor) -> torch.Tensor:
    """Multi-hot targets as 0/1 ints: the float ones BCE trains on (> 0.5 counts as 1)."""
    return (target.detach() > 0.5).long() if target.is_floating_point() else target


def left_out_multi_label(params: dict[str, Any], cls: type) -> str | None:
    """Why a metric has no meaning for a multi-label model (None: it has one)."""
    if "top_k" in params:
        return "top_k has no multi-label meaning"
    if _from_torchmetrics(cls) and "task" in accepted_params(cls):
        import torchmetrics.classification as tmc

        if not hasattr(tmc, f"Multilabel{cls.__name__}"):
            return f"torchmetrics has no multi-label {cls.__name__}"
    return None


def multi_label_params(
    key: str, cls: type, params: dict[str, Any], accepted: set[str], num_labels: int, threshold: Any
) -> dict[str, Any]:
    """`params` for a multi-label metric: task='multilabel', num_labels, the threshold.

    A torchmetrics class fixed to one task (Multiclass*, Binary*) is refused, naming the
    class to use instead; the task wrappers (Accuracy, F1Score, ...) switch to multilabel.
    """
    _refuse_single_task_class(key, cls)
    params = dict(params)
    if "task" in accepted:
        task = params.get("task", "multiclass")
        if task not in TASKS_FOR_MULTI_LABEL:
            raise ConfigValueError(
                f"{key}.params.task",
                task,
                f"the model is multi-label; accepted: {list(TASKS_FOR_MULTI_LABEL)} "
                "(both become 'multilabel')",
            )
        params["task"] = "multilabel"
    if "num_labels" in accepted:
        params.setdefault("num_labels", num_labels)
    elif "num_classes" in accepted:
        params.setdefault("num_classes", num_labels)
    if "threshold" in accepted and isinstance(threshold, float):
        params.setdefault("threshold", threshold)
    return params


def fed_labels_for_threshold(cls: type, preds: str, threshold: Any) -> bool:
    """Per-label thresholds: thresholded metrics get the 0/1 labels, not the probabilities.

    torchmetrics takes one float threshold; 0/1 int predictions are used as they are, so
    feeding `probs > threshold[label]` applies each label's own threshold.
    """
    return isinstance(threshold, list) and preds == "probs" and "threshold" in accepted_params(cls)


def _refuse_single_task_class(key: str, cls: type) -> None:
    name = cls.__name__
    fixed = next((p for p in ("Multiclass", "Binary") if name.startswith(p)), None)
    if fixed is None or not _from_torchmetrics(cls):
        return
    import torchmetrics
    import torchmetrics.classification as tmc

    base = name[len(fixed) :]
    instead = [n for n in (f"Multilabel{base}",) if hasattr(tmc, n)]
    instead += [n for n in (base,) if isinstance(getattr(torchmetrics, n, None), type)]
    raise ConfigValueError(
        f"{key}.metric_class",
        name,
        f"a {fixed.lower()}-only metric, but the model is multi-label; accepted: "
        f"{instead or 'a Multilabel* metric'}",
    )


def _from_torchmetrics(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "torchmetrics"


def accepted_params(cls: type) -> set[str]:
    """Keyword names a metric class takes (torchmetrics task wrappers use __new__)."""
    import inspect

    names: set[str] = set()
    for fn in (getattr(cls, "__new__", None), cls.__init__):
        try:
            names |= set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            continue
    return names
