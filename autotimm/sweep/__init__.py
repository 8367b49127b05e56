"""Sweeps: one GPU per trial (gpus), the Optuna study (study), the trial side (trial),
and the NaN/inf training-loss guard (nonfinite).

Nothing heavy is imported here: `autotimm.sweep.study` imports optuna when a sweep starts.
"""
