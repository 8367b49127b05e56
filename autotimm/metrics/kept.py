"""The batches a stage keeps between its metrics' updates (`MetricManager.keep`/`flush`),
so that the metrics are updated once, on the concatenated batches, instead of per batch."""

from __future__ import annotations

import torch


class KeptBatches:
    """Detached logits (or their argmax labels) and targets of the steps since the metrics'
    last update."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.elements = 0

    def keep(self, logits: torch.Tensor, target: torch.Tensor) -> int:
        """Keep one batch; returns the logits elements kept in all."""
        self.logits.append(logits)
        self.targets.append(target.detach())
        self.elements += logits.numel()
        return self.elements

    def take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Everything kept, concatenated (None when nothing is); empties the store."""
        if not self.logits:
            return None
        batches = (torch.cat(self.logits), torch.cat(self.targets))
        self.clear()
        return batches

    def clear(self) -> None:
        self.logits, self.targets, self.elements = [], [], 0
