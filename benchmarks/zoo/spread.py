"""How far apart two converted models really are on the zoo's eval split: a paired, clustered bootstrap.

The zoo's classifier eval split has 200 photo crops, but 20 come from each of 10 photos: crops of one photo
agree or disagree together, so the binomial error of 200 independent samples understates the noise. The
interval here resamples whole photos (clusters) with replacement and recomputes the *difference* of two
models' hit rates on the same samples (paired), which is what a claim like "INT8 within 3 points of FP16"
needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.zoo import data
from benchmarks.zoo.manifest import ZooModel

DRAWS = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided percentile interval, in the unit of the inputs (e.g. points)."""
    point: float
    low: float
    high: float

    def text(self, fmt: str = "{:.1f}") -> str:
        return f"{fmt.format(self.point)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def eval_groups(z: ZooModel) -> np.ndarray | None:
    """Which source image each eval sample was cut from, where several share one (data.photos: CROPS_EVAL
    crops per photo, photo by photo); None where every sample is its own image, line or clip."""
    if z.data == "photos":
        return np.repeat(np.arange(len(data.EVAL_PHOTOS)), data.CROPS_EVAL)
    return None


def parse_hits(hits: str) -> np.ndarray:
    """The '+'/'-' string a zoo row records (benchmarks/zoo/metrics.hits) as booleans, one per sample."""
    if set(hits) - {"+", "-"}:
        raise ValueError(f"hits must be '+'/'-' only, got {sorted(set(hits) - {'+', '-'})}")
    return np.frombuffer(hits.encode(), np.uint8).astype(np.float64) == ord("+")


def gap_interval(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, *, scale: float = 100.0,
                 draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> Interval:
    """mean(a) - mean(b) on the same samples, times ``scale``, with a bootstrap interval that resamples
    ``groups`` (one id per sample; None: every sample is its own group)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equal-length 1-D hit vectors, got {a.shape} and {b.shape}")
    g = np.arange(len(a)) if groups is None else np.asarray(groups)
    if g.shape != a.shape:
        raise ValueError(f"{len(g)} group ids for {len(a)} samples")
    ids, inv = np.unique(g, return_inverse=True)
    # per group: sample count and summed difference; a resample of groups adds these up
    n = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    d = np.bincount(inv, weights=a - b, minlength=len(ids))
    pick = np.random.default_rng(seed).integers(0, len(ids), size=(draws, len(ids)))
    boot = d[pick].sum(1) / n[pick].sum(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return Interval(scale * float(np.mean(a - b)), scale * float(lo), scale * float(hi))


def verdict(gap: Interval, target: float) -> str:
    """'met' when the whole interval of a shortfall is at or below ``target``, 'not met' when it is all above,
    'open' when the eval split cannot tell."""
    if gap.high <= target:
        return "met"
    return "not met" if gap.low > target else "open"
