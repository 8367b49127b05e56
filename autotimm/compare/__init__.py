"""Compare the runs of a sweep (or any folder of runs) locally, no W&B server needed.

    python -m autotimm.compare outputs/sweeps/lr_mixup_ls
    python -m autotimm.compare outputs/runs --metric test/accuracy

Prints a ranked table (trial, swept values, objective, val/test metrics, epochs, time,
GPU, status) and writes, into the folder (or --out):

- compare.csv: every run, every metric;
- compare_folds.csv (k-fold runs, sweeps/kfold.yaml): one row per configuration, the mean
  and std of every metric over its folds (also printed as a second table);
- compare.png: the objective against each swept value, and every run's validation curve;
- best_config.yaml: the best run's full config, re-run with one command
  (`python train.py --config-dir <folder> --config-name best_config`);
- for a sweep with an Optuna study (its optimization_results.yaml or study.db; `--storage
  URL` where the file shows the URL masked), Optuna's own plots: optuna_history.png,
  optuna_importances.png, optuna_parallel.png, optuna_intermediate.png and, for
  multi-objective studies, optuna_pareto.png (and a `pareto` column marking the front).
  A plot Optuna cannot draw for the study is skipped with a one-line note.

Completed runs come first, best first; then pruned sweep trials by the value they were
stopped at; then failed, interrupted and unfinished ones.

One module per job: `runs` (finding runs, reading their records through
`autotimm.records.results`, their swept values), `ranking`, `rows` (the flat rows), `csv_out`,
`table` (the terminal table), `plots`, `study` (the sweep's Optuna study, its front),
`study_plots` (Optuna's plots),
`best_config`, `folds` (k-fold mean ± std), `cli` (`compare()` and the command).
"""

from autotimm.compare.best_config import BEST_CONFIG, write_best_config
from autotimm.compare.cli import compare, main
from autotimm.compare.csv_out import CSV_FILE, write_csv
from autotimm.compare.folds import FOLDS_CSV, fold_rows
from autotimm.compare.plots import PNG_FILE, plot, validation_curve
from autotimm.compare.rows import rows
from autotimm.compare.table import print_table
from autotimm.records.ranking import rank
from autotimm.records.runs import NOT_SWEPT, Run, find_runs, swept_keys

__all__ = [
    "BEST_CONFIG",
    "CSV_FILE",
    "FOLDS_CSV",
    "NOT_SWEPT",
    "PNG_FILE",
    "Run",
    "compare",
    "find_runs",
    "fold_rows",
    "main",
    "plot",
    "print_table",
    "rank",
    "rows",
    "swept_keys",
    "validation_curve",
    "write_best_config",
    "write_csv",
]
