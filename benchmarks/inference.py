"""Inference speed of one trained model: PyTorch eager, torch.compile, TorchScript,
torch.export and ONNX Runtime, batch-1 latency and images/s at a larger batch.

    python benchmarks/inference.py outputs/runs/<date>/<run>        # a trained run
    python benchmarks/inference.py --backbone resnet18 --image-size 224   # fresh weights
    python benchmarks/inference.py --tiny                           # seconds, for the tests

Each exported form is written with autotimm.export's own exporters (so it passed their
parity check first) and timed on the same device where it can run there (ONNX Runtime:
the CPU unless onnxruntime-gpu is installed). The last line is one JSON object (also
appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common


def _model(args: argparse.Namespace) -> Any:
    """The trained model (MODEL), or a fresh one of --backbone (speed needs no training)."""
    from autotimm.inference.checkpoint import TrainedModel, load_trained

    if args.model:
        return load_trained(args.model)
    from autotimm import ImageClassifier
    from autotimm.data.transforms import resolve_data_config

    classifier = ImageClassifier(args.backbone, num_classes=10, metrics=[]).eval()
    config = resolve_data_config(args.backbone, image_size=args.image_size)
    names = [str(i) for i in range(10)]
    return TrainedModel(classifier, names, config, Path("-"), dict(classifier.hparams))


def _time(run: Callable[[Any], Any], images: Any, reps: int, device: Any) -> float:
    """Median seconds of `reps` calls after two warm-up calls."""
    for _ in range(2):
        run(images)
    times = []
    for _ in range(reps):
        common.sync(device)
        start = time.perf_counter()
        run(images)
        common.sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _runners(trained: Any, folder: Path, device: Any, compile_: bool) -> dict[str, Any]:
    """name -> (callable on a tensor batch, its device); exporting as autotimm.export does."""
    import torch

    from autotimm.inference.onnx_format import export_onnx, session_runner
    from autotimm.inference.torch_formats import export_program, export_torchscript

    network = trained.network().to(device)
    runners: dict[str, Any] = {"eager": (network, device)}
    if compile_:
        runners["compiled"] = (torch.compile(network), device)
    export_torchscript(trained, folder / "m.pt")
    runners["torchscript"] = (torch.jit.load(str(folder / "m.pt"), map_location=device), device)
    export_program(trained, folder / "m.pt2")
    runners["torch_export"] = (torch.export.load(str(folder / "m.pt2")).module().to(device), device)
    export_onnx(trained, folder / "m.onnx")
    # as many threads as torch uses: the same CPU share for every engine
    ort_run = session_runner(folder / "m.onnx", threads=torch.get_num_threads())
    runners["onnxruntime"] = (ort_run, torch.device("cpu"))
    return runners


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every engine timed in `args.rounds` interleaved rounds (a shared machine's load
    then hits all alike); per engine the median over rounds."""
    import torch

    device, _ = common.prepare(args)
    trained = _model(args)
    size = tuple(trained.data_config["input_size"])
    result: dict[str, Any] = {"benchmark": "inference", "architecture": trained.backbone_name,
                              "input_size": list(size), "batch_size": args.batch_size}  # fmt: skip
    timings: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runners = _runners(trained, Path(tmp), device, args.compile)
        for name, (run, where) in runners.items():
            started = time.perf_counter()
            run(torch.randn(args.batch_size, *size).to(where))  # compiles, for torch.compile
            timings[name] = {"first": [time.perf_counter() - started], "one": [], "batch": []}
        for _ in range(args.rounds):
            for name, (run, where) in runners.items():
                one = torch.randn(1, *size).to(where)
                batch = torch.randn(args.batch_size, *size).to(where)
                timings[name]["one"].append(_time(run, one, args.reps, where))
                timings[name]["batch"].append(_time(run, batch, args.reps, where))
    for name, times in timings.items():
        result[name] = {
            "latency_ms": round(statistics.median(times["one"]) * 1000, 3),
            "img_s": round(args.batch_size / statistics.median(times["batch"]), 1),
            "first_call_s": round(times["first"][0], 2),
            "device": runners[name][1].type,
        }
    result.update(common.environment(device), loadavg=common.loadavg())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="checkpoint, run directory or sweep directory")
    p.add_argument("--backbone", default="resnet18", help="without MODEL: fresh weights")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=10, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the engines")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default=None)  # common.prepare reads it; float32 here
    p.add_argument("--tiny", action="store_true", help="test_resnet at 32 px, 3 reps")
    p.add_argument("--out", default=None, help="folder for results.jsonl")
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone, args.image_size, args.batch_size = "test_resnet", 32, 4
        args.reps, args.rounds = 3, 1
        args.compile = False
    result = measure(args)
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
