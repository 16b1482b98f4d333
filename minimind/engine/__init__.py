"""The training engine: the Trainer and what steers, places and watches it (control, distributed,
environment, trackers, watch). Nothing here knows about terminals; UIs observe events and steer
through RunControl or the run directory.
"""
