"""Does pruning find the same best model for less compute? The same seeded sweep twice.

    python benchmarks/sweep_efficiency.py                  # defaults: < 25 min on 2 CPU cores
    python benchmarks/sweep_efficiency.py --pruner hyperband --trials 24
    python benchmarks/sweep_efficiency.py --pruner median --pruner-arg n_startup_trials=3
    python benchmarks/sweep_efficiency.py --tiny           # seconds-scale check (tests)

Runs `python train.py -m` twice on Fashion-MNIST (Debian's dataset-fashion-mnist, a
seeded subset) with the same sampler seed and search space (lr, log-uniform over four
decades, where many values are hopeless): once with `hydra/sweeper/pruner=none`, once
with the chosen pruner (successive halving: the best third goes on after epochs 2 and 4).
Both use one study name, so trial n draws the same values in both; with the default
random sampler the two sweeps train the very same learning rates. Reads every trial's
run record and prints, per sweep, the best objective, the epochs trained in total and
the wall time; the last line is a JSON object with `objective_gap` (best without pruning
minus best with, in the direction of the objective) and `epochs_ratio` (epochs with
pruning / without). Target: gap <= 0.01, ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, emit

FASHION = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pruner", default="successive_halving", help="a hydra/sweeper/pruner option")
    p.add_argument(
        "--pruner-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of the pruner (repeatable), e.g. --pruner-arg n_startup_trials=2",
    )
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="max epochs per trial")
    p.add_argument("--limit", type=int, default=1000, help="images per split (seeded sample)")
    p.add_argument("--model", default="resnet10t", help="timm model name")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--seed", type=int, default=7, help="the sampler's seed (both sweeps)")
    p.add_argument(
        "--sampler",
        default="random",
        help="a hydra/sweeper/sampler option; random (default): both sweeps train the very "
        "same learning rates, so the gap is what pruning alone costs; tpe_seeded: the "
        "sweeps' later trials differ as TPE learns from different (pruned) histories",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="linear lr warm-up before the cosine decay (as timm's recipes); measured: it "
        "does not make early epochs rank trials as their end does here (lr 2e-2 read "
        "0.16-0.22 at epochs 2-3, 0.75 at the end)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another train.py override for both sweeps (repeatable)",
    )
    p.add_argument("--tiny", action="store_true", help="a seconds-scale run (for tests)")
    p.add_argument("--out", default=None, help="append the JSON line to OUT/results.jsonl")
    p.add_argument("--work-dir", default=None, help="where the sweeps write (default: temp)")
    args = p.parse_args(argv)
    if args.tiny:
        args.trials, args.epochs, args.limit, args.model = 3, 3, 64, "test_resnet"
        args.image_size = 16
    return args


def sweep_command(args: argparse.Namespace, name: str, pruner: str, out: Path) -> list[str]:
    data = ["data=fashion_mnist"] if FASHION.is_dir() and not args.tiny else ["data=digits"]
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "+sweeps=quick",
        f"sweep.name={name}",
        f"hydra/sweeper/pruner={pruner}",
        *(f"hydra.sweeper.pruner.{arg}" for arg in (args.pruner_arg if pruner != "none" else [])),
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra/sweeper/sampler={args.sampler}",
        f"hydra.sweeper.sampler.seed={args.seed}",
        "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-5, 1e-1))'}",
        *data,
        f"data.limit={args.limit}",
        f"data.image_size={args.image_size}",
        f"backbone.model_name={args.model}",
        f"trainer.max_epochs={args.epochs}",
        "logger=csv",
        "callbacks=quiet",
        "print_config=false",
        "test=false",
        f"paths.output_dir={out}",
        f"+scheduler.kwargs.warmup_epochs={args.warmup_epochs}",
        *args.override,
    ]


def run_sweep(args: argparse.Namespace, pruner: str, work: Path) -> dict[str, Any]:
    """One sweep; its best objective, epochs trained in total and wall time."""
    from autotimm.compare import find_runs

    # one study name for both: trial n draws the same values in both sweeps (its seed is
    # the sampler seed, the study name and n), so only the pruner differs
    name, out = "efficiency", work / pruner
    started = time.time()
    proc = subprocess.run(
        sweep_command(args, name, pruner, out), capture_output=True, text=True, cwd=ROOT
    )
    wall = time.time() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"the {pruner} sweep failed (exit {proc.returncode})")
    records = [run.record for run in find_runs(out / "sweeps" / name) if run.record]
    done = [r for r in records if r.status == "completed" and r.objective.value is not None]
    mode = done[0].objective.mode if done else "max"
    pick = max if mode == "max" else min
    return {
        "pruner": pruner,
        "best": pick(r.objective.value for r in done) if done else None,
        "mode": mode,
        "epochs": sum(r.epochs or 0 for r in records),
        "trials": len(records),
        "pruned": sum(r.status == "pruned" for r in records),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="autotimm-sweep-eff-"))
    if args.pruner == "none":
        raise SystemExit("--pruner none: nothing to compare; choose a pruner")
    plain = run_sweep(args, "none", work)
    pruned = run_sweep(args, args.pruner, work)
    for row in (plain, pruned):
        print(
            f"pruner={row['pruner']:<18} best={row['best']} epochs={row['epochs']} "
            f"pruned={row['pruned']}/{row['trials']} wall={row['wall_s']} s"
        )
    sign = 1 if plain["mode"] == "max" else -1
    gap = None
    if plain["best"] is not None and pruned["best"] is not None:
        gap = round(sign * (plain["best"] - pruned["best"]), 4)
    result = {
        "benchmark": "sweep_efficiency",
        "pruner": args.pruner,
        "model": args.model,
        "trials": args.trials,
        "max_epochs": args.epochs,
        "limit": args.limit,
        "objective_gap": gap,
        "epochs_ratio": round(pruned["epochs"] / max(1, plain["epochs"]), 3),
        "without": plain,
        "with": pruned,
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
