"""Which pruner would have kept this sweep's best trial? Replays an unpruned sweep offline.

    python benchmarks/pruner_replay.py outputs/sweeps/efficiency          # every pruner preset
    python benchmarks/pruner_replay.py DIR --pruner median --pruner successive_halving \
        --set successive_halving.min_resource=2

Reads every completed trial's validation curve (its metrics.csv) of a sweep run with
`hydra/sweeper/pruner=none`, then, for each pruner preset of conf/hydra/sweeper/pruner/,
feeds those curves in trial order into a fresh in-memory Optuna study with that pruner, as
the sweep would have reported them, one epoch at a time (`--parallel` trials at once), and
stops a trial where the pruner says so (never at its last epoch, as autotimm's callback
does). A run takes seconds and trains nothing: it answers, for your own task, how much a
pruner would have saved (`epochs_ratio`) and what it would have cost (`objective_gap`, best
of the replayed sweep's completed trials against the unpruned best) before you spend GPU
time on it. Exact for sequential trials (a pruned trial's curve up to its pruning is the
unpruned one when runs are seeded); with `--parallel` > 1 the order of reports is an
approximation of the real interleaving. Hyperband's brackets are the same in every run
(Optuna keys them by a CRC-32 of the trial), and
the same as in the sweep (the replayed study takes the sweep's study name). The last line is a
JSON object.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import ROOT, emit

PRESETS = ROOT / "conf" / "hydra" / "sweeper" / "pruner"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep_dir", type=Path, help="a sweep folder (trial_NNNN/ run directories)")
    p.add_argument("--pruner", action="append", default=[], help="a preset (default: all)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PRESET.KEY=VALUE",
        help="an argument of a preset, e.g. successive_halving.min_resource=2 (repeatable)",
    )
    p.add_argument("--parallel", type=int, default=1, help="trials reporting at once")
    p.add_argument("--out", default=None, help="append the JSON line to OUT/results.jsonl")
    return p.parse_args(argv)


def curves(sweep_dir: Path) -> tuple[list[list[float]], str, str]:
    """Each completed trial's per-epoch objective (trial order), its name and mode."""
    from autotimm.compare import find_runs
    from autotimm.compare.plots import validation_curve

    every = [r for r in find_runs(sweep_dir) if r.record]
    if any(r.status == "pruned" for r in every):
        raise SystemExit(f"{sweep_dir}: has pruned trials; replay a sweep run with pruner=none")
    runs = [r for r in every if r.status == "completed"]
    if not runs:
        raise SystemExit(f"{sweep_dir}: no completed trials to replay")
    name, mode = runs[0].record.objective.name, runs[0].record.objective.mode
    found = [validation_curve(r, name)[1] for r in sorted(runs, key=_order)]
    return [c for c in found if c], name, mode


def _order(run: Any) -> tuple[int, str]:
    """Trials in the order they ran (trial numbers as numbers: 2 before 10)."""
    return (int(run.trial), "") if run.trial.isdigit() else (1 << 30, run.trial)


def pruner(preset: str, settings: list[str], epochs: int) -> Any:
    """The preset's Optuna pruner, with `--set preset.key=value` arguments applied (keys
    that refer to the run's config, e.g. hyperband's max_resource, get the sweep's epochs)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = PRESETS / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise SystemExit(f"--pruner {preset}: no such preset; accepted: {known}")
    node = OmegaConf.load(path)
    for key in list(node):
        if OmegaConf.is_interpolation(node, key):
            node[key] = epochs
    for item in settings:
        key, _, value = item.partition("=")
        if key.startswith(f"{preset}."):
            OmegaConf.update(node, key[len(preset) + 1 :], OmegaConf.create(f"v: {value}").v)
    return instantiate(node)


def study_name(sweep_dir: Path) -> str:
    """The sweep's study name (Hyperband's bracket of a trial depends on it): from its
    study.db, else the folder's name (a sweep's folder is named after its study)."""
    db = sweep_dir / "study.db"
    if db.is_file():
        import optuna

        names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")]
        if len(names) == 1:
            return names[0]
    return sweep_dir.name


def replay(
    found: list[list[float]], mode: str, make: Any, parallel: int, name: str | None = None
) -> dict[str, Any]:
    """Feed the curves into a fresh study with the pruner; best kept and epochs trained.
    `name`: the study's name (the sweep's own, so Hyperband puts trials in its brackets)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(direction=direction, pruner=make, study_name=name)
    pick = max if mode == "max" else min
    waiting, running, epochs, kept = list(range(len(found))), [], 0, []
    while waiting or running:
        while waiting and len(running) < parallel:
            running.append([study.ask(), waiting.pop(0), 0])
        still = []
        for trial, index, epoch in running:
            curve = found[index]
            trial.report(curve[epoch], epoch)
            epochs += 1
            if epoch == len(curve) - 1:  # the last epoch is never judged
                study.tell(trial, pick(curve))
                kept.append(pick(curve))
            elif trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                still.append([trial, index, epoch + 1])
        running = still
    return {"best": pick(kept) if kept else None, "epochs": epochs, "completed": len(kept)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    found, name, mode = curves(args.sweep_dir)
    presets = args.pruner or sorted(p.stem for p in PRESETS.glob("*.yaml") if p.stem != "none")
    pick, sign = (max, 1) if mode == "max" else (min, -1)
    best = pick(pick(c) for c in found)
    total = sum(len(c) for c in found)
    rows = []
    for preset in presets:
        try:
            made = pruner(preset, args.set, max(map(len, found)))
            result = replay(found, mode, made, args.parallel, study_name(args.sweep_dir))
        except Exception as error:  # e.g. threshold without a bound: Optuna's own message
            print(f"{preset:<20} not replayed: {error}", file=sys.stderr)
            continue
        gap = None if result["best"] is None else round(sign * (best - result["best"]), 4)
        rows.append({"pruner": preset, "objective_gap": gap, **result})
        rows[-1]["epochs_ratio"] = round(result["epochs"] / total, 3)
        print(
            f"{preset:<20} gap={gap} epochs_ratio={rows[-1]['epochs_ratio']} "
            f"completed={result['completed']}/{len(found)}"
        )
    result = {
        "benchmark": "pruner_replay",
        "sweep": str(args.sweep_dir),
        "objective": name,
        "trials": len(found),
        "best_unpruned": best,
        "epochs_unpruned": total,
        "settings": args.set,
        "parallel": args.parallel,
        "pruners": rows,
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
