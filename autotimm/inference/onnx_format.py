"""ONNX export: timm's exporter with torch's recommended (dynamo) path, a free batch axis,
the preprocessing in the model's metadata, then an onnxruntime parity check."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from autotimm.inference.checkpoint import TrainedModel
from autotimm.inference.metadata import export_metadata
from autotimm.inference.parity import DEFAULT_ATOL, ParityReport, check_batch, compare
from autotimm.user_errors import UserError

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def _recommended_dynamo() -> bool:
    """torch's own default for torch.onnx.export (dynamo from torch 2.9 on)."""
    param = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return bool(param is not None and param.default is True)


def export_onnx(trained: TrainedModel, out: Path, atol: float = DEFAULT_ATOL) -> ParityReport:
    """Write `out` (.onnx), store the metadata in it, check it with onnxruntime."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (checked here: the parity check needs it)
    except ImportError as exc:
        raise UserError(f"--format onnx needs {exc.name}: pip install 'autotimm[export]'") from exc
    from timm.utils.onnx import onnx_export

    network = trained.network().cpu()
    example = check_batch(tuple(trained.data_config["input_size"]), batch=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_export(
        network,
        str(out),
        example_input=example,
        use_dynamo=_recommended_dynamo(),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        check=True,
    )
    _store_metadata(onnx, out, export_metadata(trained))
    return compare("onnx", network, session_runner(out), check_batch(example.shape[1:]), atol)


def _store_metadata(onnx, path: Path, metadata: dict) -> None:
    """Each entry as a metadata_props key (JSON values), readable by onnxruntime."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def session_runner(path: Path, threads: int | None = None):
    """A function torch batch -> torch logits through an onnxruntime CPU session
    (`threads`: its intra-op threads; None: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])

    return run


def read_onnx_metadata(path: Path) -> dict:
    """The metadata an exported file carries, through onnxruntime (what a service has)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    return {key: json.loads(value) for key, value in props.items()}
