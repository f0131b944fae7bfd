"""Shared printing helpers: JSON to stdout for scripts, text for people, progress on stderr."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from edgeq.progress import RichProgress

SCHEMA_VERSION = 1  # every --json object carries "schema": bump it when a field changes meaning or goes away


@dataclass
class _Settings:
    quiet: bool = False  # -q: errors only on stderr
    verbose: bool = False  # -v: progress even when stderr is not a terminal
    deprecated: list[str] = field(default_factory=list)  # old flag spellings used, told after success


SETTINGS = _Settings()


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """Set -q/-v for this invocation (main() calls it every time: tests run many commands in one process)."""
    SETTINGS.quiet, SETTINGS.verbose = quiet, verbose and not quiet
    SETTINGS.deprecated = []


def deprecation_warnings() -> None:
    """After a successful command: one warning per old flag spelling used. (On errors, the one error line
    stays the only line: the old spelling was not the problem.)"""
    for line in dict.fromkeys(SETTINGS.deprecated):
        warn(line)


def progress(enabled: bool | None = None) -> RichProgress:
    """Progress bars when stderr is a terminal (or when asked for, or with -v); never with -q."""
    if SETTINGS.quiet:
        return RichProgress(False)
    if enabled is None:
        enabled = SETTINGS.verbose or sys.stderr.isatty()
    return RichProgress(enabled)


def emit(text: str) -> None:
    print(text, flush=True)


def warn(line: str) -> None:
    """A warning or note on stderr; -q silences it."""
    if not SETTINGS.quiet:
        print(line, file=sys.stderr, flush=True)


def with_schema(obj):
    """``obj`` with ``"schema"`` set: on a dict, and on each dict of a list (bench's list of results)."""
    if isinstance(obj, dict):
        return {"schema": SCHEMA_VERSION, **obj} if "schema" not in obj else obj
    if isinstance(obj, list):
        return [with_schema(x) if isinstance(x, dict) else x for x in obj]
    return obj


def emit_json(obj) -> None:
    from edgeq.report import _finite

    print(json.dumps(_finite(with_schema(obj)), indent=2), flush=True)


def renamed(new, old, new_flag: str, old_flag: str, required: bool = False):
    """The value of a renamed flag: ``new``, else the deprecated ``old`` spelling (with a warning).

    Old spellings stay as hidden aliases for a release, so scripts keep working while they move.
    """
    import typer

    if old is not None and old != [] and (new is None or new == []):
        SETTINGS.deprecated.append(f"edgeq: warning: {old_flag} is deprecated (removed after 0.2); use {new_flag}")
        return old
    if required and (new is None or new == []):
        raise typer.BadParameter(f"missing option {new_flag}")
    return new


def complete_target(incomplete: str) -> list[str]:
    """Shell completion for --target and 'targets show': the profile names edgeq can find."""
    from edgeq.targets import known_targets

    return [n for n in known_targets() if n.startswith(incomplete)]
