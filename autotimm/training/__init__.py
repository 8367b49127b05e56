"""What plugs into Lightning's Trainer: callbacks, checkpoint IO, the profiler.

A library layer: imports only the top-level helpers.
"""
