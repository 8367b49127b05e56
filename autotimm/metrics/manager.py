"""`MetricManager`: builds one instance of each configured metric per stage, keeps the
batches of a stage and feeds them to its metrics, each in the form it expects.

The configs themselves (`MetricConfig`) are `autotimm.metrics.config`'s; the manager also
answers `from autotimm.metrics.manager import MetricConfig`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from numbers import Integral
from typing import Any

import torch
import torch.nn as nn

from autotimm.checks import ConfigValueError, check_choice
from autotimm.metrics.checks import STAGES, checked_num_classes, checked_threshold
from autotimm.metrics.config import MetricConfig, as_metric_config
from autotimm.metrics.inputs import (
    as_preds,
    as_targets,
    fed_labels_for_threshold,
    left_out_multi_label,
    reads_only_argmax,
)
from autotimm.metrics.kept import KeptBatches
from autotimm.private_apis import MODULE_CHILDREN
from autotimm.user_errors import UserError
from autotimm.utils import to_plain

log = logging.getLogger(__name__)

# logits elements a stage keeps before its metrics are updated anyway (16 MiB in float32)
PENDING_LIMIT = 1 << 22


def _config_list(configs: Any) -> list[MetricConfig]:
    configs = to_plain(configs)
    if configs is None:
        return []
    if not isinstance(configs, (list, tuple)):
        raise ConfigValueError(
            "configs", configs, "not a list; accepted: a list of MetricConfig (or dicts)"
        )
    return [as_metric_config(c) for c in configs]


def _left_out(config: MetricConfig, num_classes: int, multi_label: bool) -> str | None:
    """Why a metric means nothing for this model (None: it is kept)."""
    if multi_label:
        return left_out_multi_label(config.params, config.resolve_class())
    # top-k accuracy with k >= num_classes is always 1: one metric set (with top-5)
    # then serves any data set, and the metric is left out where it means nothing
    if config.params.get("top_k", 1) >= max(num_classes, 2):
        return f"top_k >= num_classes={num_classes}"
    return None


class MetricManager(nn.Module):
    """Owns separate metric instances for train, val and test; a read-only collection of
    its MetricConfigs (`len`, iteration in order, `manager[i]`, `name in manager`).

    `get_val_metrics()` (or `manager.get("val")`) is a ModuleDict name -> metric: the
    instances the model updates. Registered as a submodule, so metrics follow the model's
    device. `multi_label=True` builds multilabel metrics (`num_labels=num_classes`) with a
    `threshold` (one float, or one per label) for the 0/1 predictions.
    A manager needs at least one config; `for_model` also builds an empty one.
    """

    def __init__(
        self,
        configs: list[MetricConfig] | list[dict[str, Any]],
        num_classes: int,
        multi_label: bool = False,
        threshold: float | list[float] = 0.5,
        *,
        allow_empty: bool = False,
    ) -> None:
        super().__init__()
        configs = _config_list(configs)
        if not configs and not allow_empty:
            raise ConfigValueError(
                "configs",
                configs,
                "a MetricManager needs at least one MetricConfig; accepted: a non-empty list "
                "(a model without metrics: ImageClassifier(metrics=[]))",
            )
        self.num_classes = checked_num_classes(num_classes)
        self.multi_label = bool(multi_label)
        self.threshold = checked_threshold(threshold, self.num_classes)
        reasons = {c.name: _left_out(c, self.num_classes, self.multi_label) for c in configs}
        for name, reason in reasons.items():
            if reason:
                log.info("metric %r left out: %s", name, reason)
        self._configs = [c for c in configs if not reasons[c.name]]
        names = [c.name for c in self._configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UserError(f"Metric names must be unique; repeated: {duplicates}")
        self._by_name = {c.name: c for c in self._configs}
        self._kept = {stage: KeptBatches() for stage in STAGES}
        if self.multi_label:  # compared on the logits' device, so it follows `.to()`
            self.register_buffer("label_threshold", torch.tensor(self.threshold), False)
        # One ModuleDict per stage (`train_metrics`, ...): separate state per stage.
        # Not torchmetrics' MetricCollection: it feeds every metric one input (here each its
        # own: labels, probs, logits, per-label 0/1), groups metrics whose states are equal
        # after the first update (wrong merges: torchmetrics #2596, #2916), and .clone(prefix=)
        # renames the getters' keys. Fed (probs, target), with compute groups, it took 1.23 ms
        # per 64x10 update of the default val metrics vs 1.54 ms here (f1_macro and
        # balanced_accuracy share one state), on logging steps and epoch ends only
        # (benchmarks/library_costs.py --clock cpu, shared 2-core x86 CPU, 2026-12-07).
        instances: dict[str, Any] = {}
        for stage in STAGES:
            built = {
                c.name: c.build(self.num_classes, self.multi_label, self.threshold)
                for c in self._configs
                if stage in c.stages
            }
            instances.update(built)
            setattr(self, f"{stage}_metrics", nn.ModuleDict(built))
        self._feeds = {c.name: self._feed(c, instances.get(c.name)) for c in self._configs}
        self._labels_only_stages = frozenset(
            stage
            for stage in STAGES
            if not self.multi_label
            and all(self._feeds[name] == "labels" for name in self.get(stage))
        )

    @classmethod
    def for_model(
        cls,
        metrics: MetricManager | list[MetricConfig] | list[dict[str, Any]] | None,
        num_classes: int,
        multi_label: bool = False,
        threshold: float | list[float] = 0.5,
    ) -> MetricManager:
        """The manager a model uses: a manager given as is (the instances the user holds are
        the ones updated), else one built from a list; may be empty."""
        if isinstance(metrics, MetricManager):
            metrics.check_fits(num_classes, multi_label, threshold)
            return metrics
        return cls(metrics, num_classes, multi_label, threshold, allow_empty=True)

    def check_fits(
        self, num_classes: int, multi_label: bool, threshold: float | list[float]
    ) -> None:
        """Refuse to serve a model with another class count, task or threshold."""
        wanted = {"num_classes": num_classes, "multi_label": bool(multi_label)}
        if multi_label:
            wanted["threshold"] = checked_threshold(threshold, num_classes)
        for key, value in wanted.items():
            if getattr(self, key) != value:
                raise ConfigValueError(
                    f"metrics.{key}",
                    getattr(self, key),
                    f"the MetricManager was built for {key}={getattr(self, key)!r}, the model "
                    f"has {key}={value!r}; accepted: a manager built with {key}={value!r}, or "
                    "a list of MetricConfig (the model builds its own manager)",
                )

    def _feed(self, config: MetricConfig, metric: Any) -> str:
        """What `config`'s metric receives: its `preds`; 0/1 labels for per-label
        thresholds; class labels where the probabilities would only be argmax-ed."""
        if self.multi_label:
            if fed_labels_for_threshold(config.resolve_class(), config.preds, self.threshold):
                return "labels"
        elif config.preds == "probs" and reads_only_argmax(metric):
            return "labels"
        return config.preds

    # ------------------------------------------------ the collection (as in AutoTimm)

    @property
    def configs(self) -> list[MetricConfig]:
        """The configs of the metrics kept, in order (a copy)."""
        return list(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __iter__(self) -> Iterator[MetricConfig]:
        return iter(list(self._configs))

    def __getitem__(self, index: int) -> MetricConfig:
        if isinstance(index, bool) or not isinstance(index, Integral):
            raise TypeError(
                f"MetricManager index {index!r}: accepted an int (for a name: "
                "get_config_by_name(name) or config(name))"
            )
        if not -len(self._configs) <= index < len(self._configs):
            raise IndexError(
                f"MetricManager index {index} out of range: {len(self._configs)} metric configs"
            )
        return self._configs[index]

    def __contains__(self, item: object) -> bool:
        """A metric name or a MetricConfig."""
        return item in self._by_name if isinstance(item, str) else item in self._configs

    def __bool__(self) -> bool:
        # a module is always true (`if model.metrics:`), even with no configs
        return True

    def get_train_metrics(self) -> nn.ModuleDict:
        """Train metrics, name -> torchmetrics instance (the ones the model updates)."""
        return self.read("train")

    def get_val_metrics(self) -> nn.ModuleDict:
        """Validation metrics, name -> torchmetrics instance."""
        return self.read("val")

    def get_test_metrics(self) -> nn.ModuleDict:
        """Test metrics, name -> torchmetrics instance."""
        return self.read("test")

    def get_metric_config(self, stage: str, name: str) -> MetricConfig | None:
        """The config of metric `name` in `stage` (None when it does not run there)."""
        return self._by_name[name] if name in self.get(_stage(stage)) else None

    def get_metric_by_name(self, name: str, stage: str | None = None) -> nn.Module | None:
        """The metric instance `name` of `stage` (no stage: val, then train, then test)."""
        stages = [_stage(stage)] if stage is not None else ["val", "train", "test"]
        found = (self.read(s)[name] for s in stages if name in self.get(s))
        return next(found, None)

    def get_config_by_name(self, name: str) -> MetricConfig | None:
        """The config of metric `name` (None when there is none)."""
        return self._by_name.get(name)

    # ------------------------------------------------ what the model calls

    def get(self, stage: str) -> nn.ModuleDict:
        """The metrics of `stage` as they are (kept batches not fed: see `read`)."""
        # straight from nn.Module's registry: no __getattr__ (which would flush kept batches)
        return getattr(self, MODULE_CHILDREN)[f"{stage}_metrics"]  # type: ignore[no-any-return]

    def read(self, stage: str) -> nn.ModuleDict:
        """The metrics of `stage` with every kept batch fed: what users read mid-epoch
        (`model.val_metrics`, `manager.train_metrics`, the `get_*` methods)."""
        self.flush(stage)
        return self.get(stage)

    def __getattr__(self, name: str) -> Any:
        # `manager.train_metrics` & co. (nn.Module finds them in _modules, through here)
        if name in _STAGE_ATTRS and "_kept" in self.__dict__:
            self.flush(name[: -len("_metrics")])
        return super().__getattr__(name)

    def keep(self, stage: str, logits: torch.Tensor, target: torch.Tensor) -> None:
        """One batch for the metrics of `stage`, fed later in one concatenated `update`
        (`flush`: at a logging step, at the epoch's end, when someone reads the metrics,
        or past PENDING_LIMIT kept elements). Stages with a `custom` metric, whose state
        may count updates, are updated at once."""
        metrics = self.get(stage)
        if not len(metrics):
            return
        if any(self._by_name[name].backend != "torchmetrics" for name in metrics):
            self.update(stage, logits, target, step_values=False)
            return
        if self._labels_only(stage):
            # every metric of the stage reads the argmax: keep it (8 bytes a row, computed
            # while the logits are in cache) instead of the logits until the next update
            kept = logits.detach().argmax(dim=-1)
        else:  # CUDA graphs (compile_mode reduce-overhead/max-autotune) reuse the output
            kept = logits.detach().clone() if logits.is_cuda else logits.detach()
        if self._kept[stage].keep(kept, target) > PENDING_LIMIT:
            self.flush(stage)

    def flush(self, stage: str) -> None:
        """Feed the metrics of `stage` every batch kept since their last update."""
        batches = self._kept[stage].take()
        if batches is None:
            return
        kept, target = batches
        if self._labels_only(stage):  # `keep` kept the labels
            self._feed_metrics(stage, {"labels": kept}, kept, target, step_values=False)
        else:
            self.update(stage, kept, target, step_values=False)

    def _labels_only(self, stage: str) -> bool:
        """Single-label, and every metric of `stage` is fed the argmax labels."""
        return stage in self._labels_only_stages

    def discard_kept(self, stage: str) -> None:
        """Forget kept batches (an epoch starts: its metrics were reset)."""
        self._kept[stage].clear()

    def config(self, name: str) -> MetricConfig:
        if name not in self._by_name:
            raise KeyError(f"no metric named {name!r}; accepted: {list(self._by_name)}")
        return self._by_name[name]

    def update(
        self, stage: str, logits: torch.Tensor, target: torch.Tensor, step_values: bool = True
    ) -> dict[str, torch.Tensor]:
        """Feed one batch to every metric of `stage` in the form each expects.

        With `step_values`, returns the batch values of the metrics configured with
        `log_on_step` (those run the metric's forward, which also accumulates the epoch
        state); without, every metric only accumulates (cheaper: no per-batch compute).
        Multi-label: float multi-hot targets (what BCE trains on) become 0/1 ints.
        """
        return self._feed_metrics(stage, {}, logits.detach(), target, step_values)

    def _feed_metrics(
        self,
        stage: str,
        inputs: dict[str, torch.Tensor],
        logits: torch.Tensor,
        target: torch.Tensor,
        step_values: bool,
    ) -> dict[str, torch.Tensor]:
        """`update`'s work; `inputs`: feeds already made (the others come from `logits`)."""
        metrics = self.get(stage)
        if not len(metrics):
            return {}
        if self.multi_label:
            target = as_targets(target)
        threshold = self.label_threshold if self.multi_label else 0.5
        values: dict[str, torch.Tensor] = {}
        for name, metric in metrics.items():
            config = self.config(name)
            feed = self._feeds[name]
            if feed not in inputs:
                inputs[feed] = as_preds(logits, feed, self.multi_label, threshold)
            if step_values and config.log_on_step:
                values[name] = metric(inputs[feed], target)
            else:
                metric.update(inputs[feed], target)
        return values


_STAGE_ATTRS = frozenset(f"{stage}_metrics" for stage in STAGES)


def _stage(stage: str) -> str:
    """A stage name in any letter case -> lower-case (unknown: a clear error)."""
    lowered = stage.lower() if isinstance(stage, str) else stage
    check_choice("stage", lowered, STAGES)
    return lowered
