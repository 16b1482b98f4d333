"""Everything written to disk: crash-safe writes, weights and exact-resume files, the run directory.

Below both the model/data core and the training engine: it imports neither.
"""
