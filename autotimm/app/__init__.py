"""The Hydra app behind `python train.py`: compose -> fit -> test -> record -> objective,
its config nodes, resolvers, loggers and console.

The top layer: only `train.py`, the Hydra plugins and the entry points import it.
"""
