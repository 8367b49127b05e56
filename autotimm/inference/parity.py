"""The numeric check after every export: the exported file against PyTorch on one batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autotimm.user_errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used: `--help` stays fast
    import torch

# float32 logits of the same network through another runtime differ by ~1e-6 to 1e-4
DEFAULT_ATOL = 1e-3
CHECK_BATCH = 3  # not the export's example batch (2): the batch axis must really be free


class ParityError(UserError):
    """The exported model computes something else than the PyTorch model."""


@dataclass
class ParityReport:
    """Max absolute logit difference and top-1 agreement on `batch` images."""

    fmt: str
    max_abs_diff: float
    top1_agreement: float
    batch: int
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement == 1.0

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.fmt} parity on a batch of {self.batch}: max |logit difference| "
            f"{self.max_abs_diff:.2e} (tolerance {self.atol:g}), top-1 agreement "
            f"{self.top1_agreement:.0%}: {verdict}"
        )


def check_batch(input_size: tuple[int, ...], batch: int = CHECK_BATCH) -> torch.Tensor:
    """A seeded batch of normalised-image-like values (the same every time)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_size), generator=generator)


def compare(
    fmt: str,
    reference: torch.nn.Module,
    candidate: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Run both on `images`; raise ParityError (with the numbers) when they disagree."""
    import torch

    with torch.inference_mode():
        expected = reference(images).float()
        got = torch.as_tensor(candidate(images)).float()
    if got.shape != expected.shape:
        raise ParityError(
            f"{fmt} export gives shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
        )
    report = ParityReport(
        fmt,
        float((got - expected).abs().max()),
        float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
        len(images),
        atol,
    )
    if not report.passed:
        raise ParityError(report.line())
    return report
