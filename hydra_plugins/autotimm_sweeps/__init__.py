"""autotimm's Hydra plugins: the top-level `sweeps/` folder as config group `sweeps`, and
the sweepers behind `python train.py -m +sweeps=<name>` (implemented in autotimm.sweep).
"""
