"""The run record (`results.json`), finding and ranking runs, and what a run optimises.

A library layer: imports only the top-level helpers. `results` alone spells the record's
file name and reads and writes it.
"""
