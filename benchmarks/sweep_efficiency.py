"""Does pruning find the same best model for less compute? The same seeded sweep twice.
And which sampler finds the best model in 10, 20, 30 trials (--sampler several times)?

    python benchmarks/sweep_efficiency.py                  # defaults: about 12 min on 2 CPU cores
    python benchmarks/sweep_efficiency.py --pruner hyperband --trials 24
    python benchmarks/sweep_efficiency.py --pruner median --pruner-arg n_startup_trials=3
    python benchmarks/sweep_efficiency.py --tiny           # seconds-scale check (tests)
    python benchmarks/sweep_efficiency.py --sampler tpe --sampler gp --sampler random \
        --seed 7 --seed 11 --seed 13 --small    # samplers: about an hour on 2 shared cores

Runs `python train.py -m` twice on Fashion-MNIST (Debian's dataset-fashion-mnist, a
seeded subset: 2,000 training and 2,000 validation images) with the same sampler seed and
search space (lr, log-uniform over four decades, where many values are hopeless, plus the
quick sweep's mixup alpha and label smoothing), two single-threaded trials at once (one per
core): once with `hydra/sweeper/pruner=none`, once with the chosen pruner (successive
halving: the best quarter goes on after epochs 2 and 5). 2,000 training images make 31 steps
an epoch: with 1,000 (15 steps) the early epochs of high learning rates did not predict
their end and pruning lost the best trial. 2,000 validation images: with 1,000 one
epoch's accuracy moved by about 0.013 from noise alone, more than the 0.01 the target
allows, so the "best" trial was partly chance and one noisy epoch at a rung decided it.
Both use one study name, so trial n draws the same values in both; with the default
random sampler the two sweeps train the very same learning rates. Reads every trial's
run record and prints, per sweep, the best objective, the epochs trained in total and
the wall time; the last line is a JSON object with `objective_gap` (best without pruning
minus best with, in the direction of the objective) and `epochs_ratio` (epochs with
pruning / without). Target: gap <= 0.01, ratio <= 0.5.

Samplers (several --sampler, or --pruner none): one unpruned sweep per sampler and seed
(--seed, repeatable), each of --trials trials (default: the largest of --at), on the same
task and search space, all under one study name, so trial n of every sweep with one seed
draws with the same per-trial seed: TPE's and GP's first 10 trials (their n_startup_trials)
are the random sampler's very trials, and the samplers differ from trial 10 on. Reads each
study's trials in the order they were asked and reports, per sampler and seed, the best
objective after each of --at trials (10, 20, 30) and the median over the seeds; the last
line is a JSON object with `best_after` (sampler -> seed -> trials -> best), `median`
(sampler -> trials -> median best) and `mean_later` (the mean objective of trials 11-30:
how close to the best a sampler's own trials were) with its median over the seeds. `tpe`
and `gp` name the seeded presets (tpe_seeded, gp_seeded: constant liar for TPE with
parallel trials); any other hydra/sweeper/sampler option runs as named. With the same
--work-dir, finished sweeps are only read again (a stopped run goes on where it stopped).
--small: the benchmark's task made cheap enough for 9 sweeps of 30 trials on 2 cores
(timm's test_resnet at 16 px, 1,000 training and 1,000 validation images, 5 epochs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, emit

FASHION = Path("/usr/share/datasets/fashion-mnist")
# --sampler tpe / gp: the seeded presets (conf/hydra/sweeper/sampler/*_seeded.yaml)
SAMPLER_OPTIONS = {"tpe": "tpe_seeded", "gp": "gp_seeded"}
DEFAULT_AT = "10,20,30"


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
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="trials per sweep (default: 16; comparing samplers: the largest of --at)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="sweep.n_jobs: trials at once (2: one single-threaded trial per core here)",
    )
    p.add_argument("--epochs", type=int, default=8, help="max epochs per trial")
    p.add_argument("--limit", type=int, default=2000, help="images per split (seeded sample)")
    p.add_argument("--model", default="resnet10t", help="timm model name")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument(
        "--seed",
        type=int,
        action="append",
        default=None,
        help="the sampler's seed (both sweeps; default 7); comparing samplers: repeatable, "
        "every sampler runs once per seed",
    )
    p.add_argument(
        "--lr",
        default="1e-5,1e-1",
        metavar="LOW,HIGH",
        help="the log-uniform range of optimizer.lr (1e-4,3e-2: the quick sweep's)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0333333,
        help="data.val_fraction: the default holds out 2,000 of Fashion-MNIST's 60,000 "
        "training images for validation (--limit caps it too)",
    )
    p.add_argument(
        "--unpruned-only",
        action="store_true",
        help="run only the pruner=none sweep (then replay it: benchmarks/pruner_replay.py)",
    )
    p.add_argument(
        "--sampler",
        action="append",
        default=None,
        help="a hydra/sweeper/sampler option (tpe, gp: the seeded presets); random "
        "(default): both sweeps train the very same learning rates, so the gap is what "
        "pruning alone costs; tpe: the sweeps' later trials differ as TPE learns from "
        "different (pruned) histories. Several (--sampler tpe --sampler gp --sampler "
        "random, or tpe,gp,random): compare the samplers, unpruned, instead",
    )
    p.add_argument(
        "--at",
        default=DEFAULT_AT,
        metavar="N,N,...",
        help="comparing samplers: report the best objective after these many trials",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="the cheap task (test_resnet at 16 px, 1,000 images per split, 5 epochs), "
        "unless --model/--image-size/--limit/--epochs say otherwise",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=0,
        help="linear lr warm-up before the cosine decay (as timm's recipes); measured on "
        "1,000-image subsets: it does not make early epochs rank trials as their end does "
        "(lr 2e-2 read 0.16-0.22 at epochs 2-3, 0.75 at the end)",
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
    given = set(argv if argv is not None else sys.argv[1:])
    args = p.parse_args(argv)
    args.samplers = [name for value in args.sampler or ["random"] for name in value.split(",")]
    args.seeds = args.seed or [7]
    args.at = sorted({int(n) for n in str(args.at).split(",")})
    args.compare = "samplers" if len(args.samplers) > 1 or args.pruner == "none" else "pruner"
    if args.compare == "pruner" and len(args.seeds) > 1:
        p.error("several --seed: only when comparing samplers (several --sampler)")
    if args.small:  # what is not given on the command line
        small = {"--model": "test_resnet", "--image-size": 16, "--limit": 1000, "--epochs": 5}
        for option, value in small.items():
            if not any(a == option or a.startswith(option + "=") for a in given):
                setattr(args, option[2:].replace("-", "_"), value)
    if args.tiny:
        args.trials, args.epochs, args.limit, args.model = 3, 3, 64, "test_resnet"
        args.image_size, args.val_fraction = 16, None  # digits: its own split
        args.jobs = 1
        if args.compare == "samplers":
            args.at = [1, 2, 3]
    if args.trials is None:
        args.trials = max(args.at) if args.compare == "samplers" else 16
    if args.compare == "samplers" and max(args.at) > args.trials:
        p.error(f"--at {args.at} asks for more trials than --trials {args.trials}")
    return args


def sampler_option(name: str) -> str:
    """The hydra/sweeper/sampler option of a --sampler name (tpe, gp: the seeded presets)."""
    return SAMPLER_OPTIONS.get(name, name)


def sweep_command(
    args: argparse.Namespace,
    name: str,
    pruner: str,
    out: Path,
    sampler: str | None = None,
    seed: int | None = None,
) -> list[str]:
    data = ["data=fashion_mnist"] if FASHION.is_dir() and not args.tiny else ["data=digits"]
    if args.val_fraction is not None:
        data.append(f"data.val_fraction={args.val_fraction}")
    low, high = args.lr.split(",")
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "+sweeps=quick",
        f"sweep.name={name}",
        f"hydra/sweeper/pruner={pruner}",
        *(f"hydra.sweeper.pruner.{arg}" for arg in (args.pruner_arg if pruner != "none" else [])),
        f"hydra.sweeper.n_trials={args.trials}",
        f"sweep.n_jobs={args.jobs}",
        f"hydra/sweeper/sampler={sampler_option(sampler or args.samplers[0])}",
        f"hydra.sweeper.sampler.seed={args.seeds[0] if seed is None else seed}",
        f"hydra.sweeper.params={{optimizer.lr: 'tag(log, interval({low}, {high}))'}}",
        *data,
        f"data.limit={args.limit}",
        f"data.image_size={args.image_size}",
        f"backbone.model_name={args.model}",
        f"trainer.max_epochs={args.epochs}",
        "logger=csv",
        "callbacks=quiet",
        "print_config=false",
        "test=false",
        "measure_cost=false",  # the model's latency is not what this compares
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


def trial_values(folder: Path) -> tuple[list[float | None], str, float | None]:
    """A sweep's objective values in the order its trials were asked (None: not complete),
    the objective's mode (max, min) and the seconds from its first trial's start to its
    last trial's end (read from the study: the same when a finished sweep is read again)."""
    import optuna

    from autotimm.sweep.storage import local_study, open_storage
    from autotimm.sweep.trials import ATTR_SURPLUS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(local_study(folder))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = [
        t
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if not t.user_attrs.get(ATTR_SURPLUS)  # asked beyond n_trials: never ran
    ]
    values = [t.value if t.state == optuna.trial.TrialState.COMPLETE else None for t in trials]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    span = round((max(ends) - min(starts)).total_seconds(), 1) if starts and ends else None
    mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    return values, mode, span


def best_after(values: list[float | None], mode: str, at: list[int]) -> dict[str, float | None]:
    """The best objective among the first n trials, for each n of `at`."""
    pick = max if mode == "max" else min
    best: dict[str, float | None] = {}
    for n in at:
        done = [v for v in values[:n] if v is not None]
        best[str(n)] = round(pick(done), 4) if done and len(values) >= n else None
    return best


def mean_later(values: list[float | None], at: list[int]) -> float | None:
    """The mean objective of the trials after the first min(at), up to max(at): where a
    sampler spent the budget after the start-up trials all samplers share."""
    later = [v for v in values[min(at) : max(at)] if v is not None]
    return round(sum(later) / len(later), 4) if later else None


def median_or_none(values: list[float | None]) -> float | None:
    import statistics

    found = [v for v in values if v is not None]
    return round(statistics.median(found), 4) if found else None


def compare_samplers(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One unpruned sweep per sampler and seed; the best objective after each of --at.

    A sweep whose study in --work-dir already has its trials is only read again (a sweep
    continues its study), so a run stopped half-way goes on where it stopped."""
    name = "efficiency"  # one study name: trial n of every sweep draws with one seed
    table: dict[str, dict[str, Any]] = {s: {} for s in args.samplers}
    later: dict[str, dict[str, float | None]] = {s: {} for s in args.samplers}
    walls: dict[str, dict[str, float | None]] = {s: {} for s in args.samplers}
    mode = "max"
    for seed in args.seeds:
        for sampler in args.samplers:
            out = work / f"{sampler}-seed{seed}"
            command = sweep_command(args, name, "none", out, sampler=sampler, seed=seed)
            proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"the {sampler} sweep (seed {seed}) failed ({proc.returncode})")
            values, mode, span = trial_values(out / "sweeps" / name)
            table[sampler][str(seed)] = best_after(values, mode, args.at)
            later[sampler][str(seed)] = mean_later(values, args.at)
            walls[sampler][str(seed)] = span
            cells = " ".join(f"@{n}={v}" for n, v in table[sampler][str(seed)].items())
            print(
                f"sampler={sampler:<8} seed={seed:<4} {cells} "
                f"mean_later={later[sampler][str(seed)]} trials' span={span} s",
                flush=True,
            )
    median = {
        sampler: {
            n: median_or_none([row[n] for row in by_seed.values()]) for n in map(str, args.at)
        }
        for sampler, by_seed in table.items()
    }
    median_later = {sampler: median_or_none(list(v.values())) for sampler, v in later.items()}
    print(f"median over seeds {args.seeds} (best is the {mode}imum):")
    for sampler, row in median.items():
        cells = " ".join(f"@{n}={v}" for n, v in row.items())
        print(f"  {sampler:<8} {cells} mean_later={median_later[sampler]}")
    result = {
        "benchmark": "sweep_efficiency",
        "compare": "samplers",
        **settings(args),
        "mode": mode,
        "at": args.at,
        "best_after": table,
        "median": median,
        "mean_later": later,
        "median_mean_later": median_later,
        # first trial's start to last trial's end, per sampler and seed
        "trials_span_s": walls,
    }
    emit(result, args.out)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="autotimm-sweep-eff-"))
    if args.compare == "samplers":
        return compare_samplers(args, work)
    plain = run_sweep(args, "none", work)
    if args.unpruned_only:
        print(f"replay it: python benchmarks/pruner_replay.py {work / 'none/sweeps/efficiency'}")
        only = {"benchmark": "sweep_efficiency", **settings(args), "without": plain}
        emit(only, args.out)
        return only
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
        **settings(args),
        "objective_gap": gap,
        "epochs_ratio": round(pruned["epochs"] / max(1, plain["epochs"]), 3),
        "without": plain,
        "with": pruned,
    }
    emit(result, args.out)
    return result


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The set-up a JSON line was measured with."""
    several = args.compare == "samplers"
    return {
        "pruner": "none" if several else args.pruner,  # samplers: unpruned sweeps
        "pruner_args": [] if several else args.pruner_arg,
        "model": args.model,
        "trials": args.trials,
        "jobs": args.jobs,
        "max_epochs": args.epochs,
        "limit": args.limit,
        "val_fraction": args.val_fraction,
        "lr": args.lr,
        **({"seeds": args.seeds} if several else {"seed": args.seeds[0]}),
        **({"samplers": args.samplers} if several else {"sampler": args.samplers[0]}),
        "sampler_options": [sampler_option(s) for s in args.samplers],
        "overrides": args.override,
        # torch's threads per trial (OMP_NUM_THREADS=1 is faster on a loaded machine)
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    main()
