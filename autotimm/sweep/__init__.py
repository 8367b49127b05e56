"""Optuna sweeps: the study sweeper (study), what it records about trials and its failure
policy (trials), resuming a killed sweep (recovery), how trials reach the launcher
(runners), the study's storage URL (storage), and every private API of Hydra, its plugins
and Optuna that these use (plugin_api). Device planning lives in autotimm.sweep.devices.

Nothing heavy is imported here: `autotimm.sweep.study` imports optuna when a sweep starts.
"""
