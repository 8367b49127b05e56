"""Sweeps: one GPU per trial (gpus), the Optuna study (study), the trial side (trial).

Nothing heavy is imported here: `autotimm.sweep.study` imports optuna when a sweep starts.
"""
