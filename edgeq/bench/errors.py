"""Errors of benchmark runs (one line each, exit code 2 in the CLI)."""
from __future__ import annotations

from edgeq.errors import EdgeqError


class BenchmarkFailed(EdgeqError):
    """A benchmark run produced no timings (crash, refused model, missing delegate); the message ends with
    the tail of the tool's output."""


class TargetError(EdgeqError):
    """An unknown target name or a target profile file that is not valid."""
