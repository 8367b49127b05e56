"""Start-up: seconds from launching ``python train.py`` to its first training step.

Compared with ``python -c "import torch, timm, lightning"`` (the floor any Lightning + timm
program pays), so the difference is what composing the config, building data/model/trainer,
the loggers and the sanity validation add. A tiny callback (added with a Hydra override,
no change to the project) writes the wall-clock time of the first training batch.
Also reported: the import time of autotimm's own modules (``python -X importtime``).

    python benchmarks/startup.py                       # the default run (digits, resnet18)
    python benchmarks/startup.py --variant lean        # logger=csv, no config print

The last line of output is one JSON object (also appended to --out/results.jsonl).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

BASELINE = "import torch, timm, lightning"
# the same imports with train.py's collector settings (autotimm/startup.py): the plain
# baseline also pays about 0.9 s of full collections that train.py defers
TUNED_BASELINE = f"import autotimm.startup as g; g.defer_collections(); {BASELINE}"
# what each variant adds to `python train.py`; all stop after one training step
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "lean": ["logger=csv", "print_config=false", "callbacks=quiet"],
    "tiny": [
        "logger=csv",
        "print_config=false",
        "callbacks=quiet",
        "data=synthetic",
        "data.synthetic_size=32",
        "data.batch_size=4",
        "backbone.model_name=test_resnet",
        "metrics=minimal",
        "model.logging_config.log_confusion_matrix=false",
    ],
}
COMMON = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "test=false",
    "+callbacks.startup_probe._target_=startup.first_step_probe",
]


def first_step_probe() -> Any:
    """A callback writing time.time() at the first training batch to $AUTOTIMM_STARTUP_PROBE."""
    import lightning as L

    class FirstStepProbe(L.Callback):
        done = False

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not self.done:
                self.done = True
                # wall clock, and the process's CPU seconds (not the time it waited for a core)
                stamp = f"{time.time()!r} {time.process_time()!r}"
                Path(os.environ["AUTOTIMM_STARTUP_PROBE"]).write_text(stamp)

    return FirstStepProbe()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        action="append",
        default=None,
        help="train.py overrides to measure (repeatable; default: default and lean)",
    )
    p.add_argument("--repeats", type=int, default=2, help="launches of each command (median)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per train.py launch")
    p.add_argument("--out", default=os.environ.get("OUT"), help="append the JSON line here")
    p.add_argument("--tiny", action="store_true", help="one quick launch each (test suite)")
    args = p.parse_args(argv)
    if args.tiny:
        args.variant, args.repeats = ["tiny"], 1
    args.variant = args.variant or ["default", "lean"]
    return args


def time_baseline(imports: str = BASELINE) -> dict[str, float]:
    """Launch to the end of the imports (not to exit: interpreter teardown is not counted)."""
    started = time.time()
    code = f"{imports}; import time; print(repr(time.time()), repr(time.process_time()))"
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=common.ROOT
    )
    wall, cpu = map(float, done.stdout.strip().splitlines()[-1].split())
    return {"wall_s": wall - started, "cpu_s": cpu}


def time_train(variant: str, timeout: float) -> dict[str, float]:
    """Launch train.py once; seconds to the first training step and to process exit."""
    with tempfile.TemporaryDirectory(prefix="autotimm-startup-") as tmp:
        probe = Path(tmp) / "first_step"
        env = dict(os.environ)
        env.update(
            AUTOTIMM_STARTUP_PROBE=str(probe),
            AUTOTIMM_OUTPUT_DIR=str(Path(tmp) / "outputs"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                     env.get("PYTHONPATH")])),
            WANDB_MODE="offline",
            WANDB_SILENT="true",
            # the probe callback is this benchmark's own target
            AUTOTIMM_TRUSTED_TARGETS=",".join(filter(None, ["startup.*",
                                                            env.get("AUTOTIMM_TRUSTED_TARGETS")])),
        )  # fmt: skip
        command = [sys.executable, str(common.ROOT / "train.py"), *VARIANTS[variant], *COMMON]
        started = time.time()
        done = subprocess.run(
            command, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout
        )
        ended = time.time()
        if done.returncode != 0 or not probe.is_file():
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"train.py ({variant}) failed with exit code {done.returncode}")
        wall, cpu = map(float, probe.read_text().split())
        return {"first_step_s": wall - started, "first_step_cpu_s": cpu, "total_s": ended - started}


def autotimm_import_s() -> float:
    """Self import time of autotimm's own modules on top of torch/timm/lightning/hydra."""
    code = (
        "import torch, timm, lightning, hydra.utils; import autotimm.app.run, "
        "autotimm.model.classifier, autotimm.data, autotimm.training.callbacks, "
        "autotimm.data.gpu_transforms"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    total_us = 0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match and match.group(2).split(".")[0] == "autotimm":
            total_us += int(match.group(1))
    return total_us / 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    baseline: list[dict[str, float]] = []
    tuned: list[dict[str, float]] = []
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in args.variant}
    for repeat in range(args.repeats):
        baseline.append(time_baseline())
        tuned.append(time_baseline(TUNED_BASELINE))
        b = baseline[-1]
        print(f"repeat {repeat}: import baseline {b['wall_s']:.2f} s (cpu {b['cpu_s']:.2f} s), "
              f"with train.py's collector settings {tuned[-1]['wall_s']:.2f} s",
              flush=True)  # fmt: skip
        for variant in args.variant:
            runs[variant].append(time_train(variant, args.timeout))
            r = runs[variant][-1]
            print(f"repeat {repeat}: train.py ({variant}) first step {r['first_step_s']:.2f} s "
                  f"(cpu {r['first_step_cpu_s']:.2f} s), exit {r['total_s']:.2f} s",
                  flush=True)  # fmt: skip
    base = common.median([b["wall_s"] for b in baseline])
    base_cpu = common.median([b["cpu_s"] for b in baseline])
    tuned_base = common.median([b["wall_s"] for b in tuned])
    result: dict[str, Any] = {
        "benchmark": "startup",
        "import_baseline_s": round(base, 3),
        "import_baseline_cpu_s": round(base_cpu, 3),
        "baseline_runs": [round(b["wall_s"], 3) for b in baseline],
        "tuned_import_baseline_s": round(tuned_base, 3),
        "tuned_baseline_runs": [round(b["wall_s"], 3) for b in tuned],
        # one more full import; left out of the (time-boxed) tiny mode
        "autotimm_import_s": None if args.tiny else round(autotimm_import_s(), 3),
    }
    for variant, values in runs.items():
        first = common.median([v["first_step_s"] for v in values])
        result[f"{variant}_first_step_s"] = round(first, 3)
        result[f"{variant}_total_s"] = round(common.median([v["total_s"] for v in values]), 3)
        result[f"{variant}_over_baseline_s"] = round(first - base, 3)
        result[f"{variant}_over_tuned_baseline_s"] = round(first - tuned_base, 3)
        # CPU seconds: what the start-up costs on a machine others share (waits left out)
        first_cpu = common.median([v["first_step_cpu_s"] for v in values])
        result[f"{variant}_over_baseline_cpu_s"] = round(first_cpu - base_cpu, 3)
        result[f"{variant}_overrides"] = VARIANTS[variant] + COMMON[:-1]
    result.update(
        {
            "repeats": args.repeats,
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "loadavg_1m": common.loadavg(),
            "date": time.strftime("%Y-%m-%d"),
            "tiny": args.tiny,
        }
    )
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
