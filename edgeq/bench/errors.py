"""Benchmark errors; they live in :mod:`edgeq.errors` (one hierarchy), re-exported here for old imports."""
from __future__ import annotations

from edgeq.errors import BenchmarkFailed, TargetError

__all__ = ["BenchmarkFailed", "TargetError"]
