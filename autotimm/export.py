"""`python -m autotimm.export MODEL --format onnx|torchscript|torch_export|timm [--out PATH]`.

MODEL is a checkpoint, a run directory or a sweep directory (as for autotimm.predict).
Every format carries the class names and the preprocessing, and is checked after writing:
the written file runs on a batch and its outputs are compared with PyTorch's (max absolute
difference, top-1 agreement); the command fails when they disagree beyond `--atol`.
The exported model returns logits, or with `--outputs probabilities` class probabilities
(softmax; for multi-label models each label's sigmoid probability).

- onnx: `model.onnx`, batch axis free, metadata_props (input_size, mean, std, class_names,
  ...), checked with onnxruntime.
- torchscript: `model.pt` (torch.jit.trace), metadata in the extra file `autotimm.json`.
- torch_export: `model.pt2` (torch.export, batch axis free), the same extra file.
- timm: a folder `timm_model/` (config.json + model.safetensors) that plain
  `timm.create_model("local-dir:<folder>", pretrained=True)` loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autotimm.inference.parity import DEFAULT_ATOL, ParityReport
from autotimm.user_errors import UserError

if TYPE_CHECKING:  # torch and the model code load when used: `--help` stays fast
    from autotimm.inference.checkpoint import TrainedModel

DEFAULT_OUT = {
    "onnx": "model.onnx",
    "torchscript": "model.pt",
    "torch_export": "model.pt2",
    "timm": "timm_model",
}
FORMATS = tuple(DEFAULT_OUT)
OUTPUTS = ("logits", "probabilities")


def _exporter(fmt: str) -> Callable[[TrainedModel, Path, float], ParityReport]:
    if fmt == "onnx":
        from autotimm.inference.onnx_format import export_onnx

        return export_onnx
    if fmt == "torchscript":
        from autotimm.inference.torch_formats import export_torchscript

        return export_torchscript
    if fmt == "torch_export":
        from autotimm.inference.torch_formats import export_program

        return export_program
    from autotimm.inference.timm_format import export_timm

    return export_timm


def export(
    model: str | Path,
    fmt: str,
    out: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    outputs: str = "logits",
) -> tuple[Path, ParityReport]:
    """Export MODEL in `fmt` to `out` (default: next to the checkpoint's run, see
    DEFAULT_OUT); returns the path and the parity report (ParityError when it fails).
    `outputs="probabilities"` exports softmax (multi-label: per-label sigmoid) outputs."""
    from autotimm.inference.checkpoint import load_trained

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    if outputs not in OUTPUTS:
        raise UserError(f"--outputs {outputs!r} is not one of {list(OUTPUTS)}")
    if fmt == "timm" and outputs != "logits":
        raise UserError(
            f"--outputs {outputs} with --format timm: timm's own layout is a plain classifier "
            "(logits); accepted: --outputs logits, or --format onnx|torchscript|torch_export"
        )
    trained = load_trained(model, "cpu")
    trained.outputs = outputs
    target = Path(out) if out is not None else _default_out(trained, fmt)
    report = _exporter(fmt)(trained, target, atol)
    return target, report


def _default_out(trained: TrainedModel, fmt: str) -> Path:
    """`<run dir>/export/<name>` for a run's checkpoint, else beside the checkpoint."""
    folder = trained.checkpoint.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder / "export" / DEFAULT_OUT[fmt]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m autotimm.export",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint, run directory or sweep directory")
    p.add_argument("--format", dest="fmt", required=True, choices=FORMATS)
    p.add_argument("--out", default=None, help="file (folder for timm); default <run>/export/")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="max |output difference|")
    p.add_argument(
        "--outputs",
        default="logits",
        choices=OUTPUTS,
        help="what the exported model returns: logits (default) or probabilities (softmax; "
        "a sigmoid per label for multi-label models); not for --format timm",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a bad input or a failed parity check prints one line, returns 1."""
    from autotimm.user_errors import user_errors_reported

    args = parser().parse_args(argv)
    with user_errors_reported(exit_process=False) as ok:
        path, report = export(args.model, args.fmt, args.out, args.atol, args.outputs)
        print(f"wrote {path}")
        print(report.line())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
