"""Classification head: optional dropout, then one linear layer."""

from __future__ import annotations

import torch
import torch.nn as nn

from autotimm.user_errors import UserError


class ClassificationHead(nn.Module):
    """Maps pooled backbone features to class logits.

    `dropout` exists only when `dropout > 0`, matching the documented architecture.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"head dropout must be in [0, 1), got {dropout!r}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            features = self.dropout(features)
        return self.fc(features)
