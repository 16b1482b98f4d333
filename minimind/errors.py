"""User-facing errors: one line that names the problem and the fix.

Anything raised as a MiniMindError is shown to people as-is (no traceback) by the CLI and the TUI;
any other exception is a bug.
"""


class MiniMindError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MiniMindError, ValueError):
    """An invalid configuration value; `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class DataError(MiniMindError):
    """A corpus file that cannot be read as {"text": ...} JSON lines."""


class CheckpointError(MiniMindError):
    """A checkpoint or run directory that cannot be used."""


class AlreadyFinished(CheckpointError):
    """A resume of a run that has trained all its steps: nothing to do, and its record stays as it is.
    Not a failure for a script that resumes until done, so the CLI exits 0 on it."""
