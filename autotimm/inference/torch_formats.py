"""TorchScript (torch.jit.trace, for LibTorch/C++ and older deployments) and torch.export
(`.pt2`, what torch now recommends: torch 2.14 warns that torch.jit.trace is deprecated),
each with the metadata as an extra file and the same parity check."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from autotimm.inference.checkpoint import TrainedModel
from autotimm.inference.metadata import export_metadata
from autotimm.inference.parity import DEFAULT_ATOL, ParityReport, check_batch, compare

METADATA_FILE = "autotimm.json"  # the extra file inside .pt / .pt2 archives


def export_torchscript(
    trained: TrainedModel, out: Path, atol: float = DEFAULT_ATOL
) -> ParityReport:
    """A traced TorchScript module in `out`; load with `torch.jit.load(out)`."""
    network = trained.network().cpu()
    example = check_batch(tuple(trained.data_config["input_size"]), batch=2)
    with warnings.catch_warnings():
        # recent torch marks torch.jit deprecated; this format exists for LibTorch users
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated.*")
        # "the trace might not generalize": the parity check below runs another batch size
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(network, example)
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {METADATA_FILE: json.dumps(export_metadata(trained))}
        torch.jit.save(traced, str(out), _extra_files=extra)
        loaded = torch.jit.load(str(out), map_location="cpu")
    return compare("torchscript", network, loaded, check_batch(example.shape[1:]), atol)


def export_program(trained: TrainedModel, out: Path, atol: float = DEFAULT_ATOL) -> ParityReport:
    """A torch.export program with a free batch axis in `out` (.pt2);
    load with `torch.export.load(out).module()`."""
    network = trained.network().cpu()
    example = check_batch(tuple(trained.data_config["input_size"]), batch=2)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {METADATA_FILE: json.dumps(export_metadata(trained))}
    torch.export.save(program, str(out), extra_files=extra)
    loaded = torch.export.load(str(out)).module()
    return compare("torch_export", network, loaded, check_batch(example.shape[1:]), atol)


def read_metadata(path: Path) -> dict:
    """The metadata stored in a .pt (TorchScript) or .pt2 (torch.export) file."""
    extra = {METADATA_FILE: ""}
    if path.suffix == ".pt2":
        torch.export.load(str(path), extra_files=extra)
    else:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])
