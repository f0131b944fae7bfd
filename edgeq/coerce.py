"""String values for typed options: ``ConvertOptions(mode="int8")`` means ``Mode.INT8``.

Library callers (and TOML/JSON configs) hold strings; the pipeline wants enums. Coercing once, where the
option object is built, keeps every later ``options.mode.needs_calibration`` honest, and an unknown value
fails there with the valid ones listed instead of as an AttributeError deep inside a conversion.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TypeVar

from edgeq.errors import OptionError

E = TypeVar("E", bound=Enum)


def as_enum(enum: type[E], value: E | str, name: str) -> E:
    """``value`` as a member of ``enum`` (members pass through; strings match values, case-insensitively).

    Raises :class:`OptionError` naming the argument ``name`` and listing the valid values.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        for member in enum:
            if text in (str(member.value).lower(), member.name.lower()):
                return member
    valid = ", ".join(str(m.value) for m in enum)
    raise OptionError(f"{name}={value!r} is not valid; use one of: {valid}")


def as_optional_enum(enum: type[E], value: E | str | None, name: str) -> E | None:
    """Like :func:`as_enum`, but ``None`` stays ``None`` (meaning "the default")."""
    return None if value is None else as_enum(enum, value, name)


def as_path(value: str | Path | None) -> Path | None:
    """A ``str`` path as a :class:`Path`; anything else (None, arrays, datasets) unchanged."""
    return Path(value) if isinstance(value, str) else value
