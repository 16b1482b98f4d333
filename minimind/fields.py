"""Settings as dataclass fields that carry their own policy, and the checks every config class uses.

A setting declared with `setting(...)` knows its help text, its form group, its choices and whether
a resumed run may change it; `minimind.config` turns those declarations into CLI flags, form fields,
`command_for` and the resume check. No torch here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

from .errors import ConfigError

KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def setting(default: Any, help: str, group: str, *, resume: bool = False, choices: tuple | None = None,
            flag: bool = True) -> Any:
    """A dataclass field whose metadata feeds the CLI flag, the TUI form field and the resume check.

    resume=True: a resumed run may change it (it does not alter what the model learns).
    flag=False: not user-settable (no flag, no form field)."""
    return field(default=default, metadata={"help": help, "group": group, "resume": resume, "choices": choices,
                                            "flag": flag})


def unwrap_optional(tp: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of an annotation like Optional[int]."""
    args = typing.get_args(tp)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def coerce_fields(obj: Any) -> None:
    """Accept JSON-ish values (1 for True, 5 for 5.0) but refuse wrong kinds with a clear message."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        base, optional = unwrap_optional(hints[f.name])
        if value is None:
            if optional:
                continue
            raise ConfigError(f.name, "must be set")
        if base is bool:
            if isinstance(value, bool) or value in (0, 1):
                setattr(obj, f.name, bool(value))
                continue
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                continue
            if isinstance(value, float) and value.is_integer():
                setattr(obj, f.name, int(value))
                continue
        elif base is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(obj, f.name, float(value))
                continue
        elif isinstance(value, base):
            continue
        raise ConfigError(f.name, f"must be {KINDS[base]}, got {value!r}")


def require_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(name, f"must be at least 1, got {value}")


def require_non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(name, f"must be >= 0, got {value}")


def round_up(value: int, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))
