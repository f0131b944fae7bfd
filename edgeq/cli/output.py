"""Shared printing helpers: JSON to stdout for scripts, text for people, progress on stderr."""
from __future__ import annotations

import json
import sys

from edgeq.progress import RichProgress


def progress(enabled: bool | None = None) -> RichProgress:
    """Progress bars when stderr is a terminal (or when asked for)."""
    return RichProgress(sys.stderr.isatty() if enabled is None else enabled)


def emit(text: str) -> None:
    print(text, flush=True)


def emit_json(obj) -> None:
    from edgeq.report import _finite

    print(json.dumps(_finite(obj), indent=2), flush=True)
