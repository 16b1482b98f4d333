"""The training engine: Trainer, RunControl, events, checkpoints and the run directory.

Nothing here knows about terminals; UIs observe events and steer through RunControl.
"""
