"""The published numbers a test is bound to, read from the committed results (what README and docs quote), and
the noise a re-measurement on the same images may show.

Why read them instead of writing them into the test: the claim lives in one place (benchmarks/results, from
which check_numbers finds every quoted number), and a test bound to it fails when the code stops reproducing it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def results(bench: str) -> dict:
    return json.loads((RESULTS / f"{bench}.json").read_text())


def margin_points(agreement: float, n: int) -> float:
    """Noise of a top-1 difference between two models scored on the same n images, in points.

    The difference counts images only one of the two gets right; if a rerun flips which of the d = n(1 -
    agreement) disagreeing images fall on which side, the count moves by about sqrt(d) (a binomial spread),
    i.e. 100 * sqrt((1 - agreement) / n) points. Two of those, and never less than one image (100 / n).
    """
    return max(100.0 / n, 200.0 * math.sqrt(max(1.0 - agreement, 1.0 / n) / n))
