"""Activation ranges chosen by their effect on the network's output, not by each tensor's own error.

Per-tensor clipping (``ranges.py``) minimizes each tensor's quantize-dequantize error, which ignores how
much of that error reaches the output: a clip that is optimal locally can hurt the network, and a tensor
that looks fine alone can dominate the output error. This step searches coordinate-wise: for the
activation tensors with the longest tails (where clipping trades most), it tries a few narrower ranges,
quantizes the whole model with the converter's own quantizer for each, and keeps a change only when the
INT8 model's output SQNR against the float model rises on the fit samples. The pipeline then judges the
result on held-back samples like every other step.
"""
from __future__ import annotations

import numpy as np

from edgeq import metrics
from edgeq.quantize.prepare.ranges import activation_samples, with_ranges
from edgeq.quantize.prepare.step import Backend, Candidate

TENSORS = 6  # tensors searched, longest tails first: each costs len(FACTORS) quantizations of the model
FACTORS = (0.4, 0.6, 0.8)  # the recorded range scaled by these
SAMPLES = 32  # fit samples the output SQNR is measured on
MIN_GAIN_DB = 0.05


def recorded_ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """Tensor name -> the (min, max) calibration recorded in the calibrated model."""
    from edgeq.tflite import flatbuffer

    out = {}
    for t in flatbuffer.load(calibrated).subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.min is not None and len(q.min) == 1:
            out[flatbuffer.name_of(t)] = (float(q.min[0]), float(q.max[0]))
    return out


def tail_ratio(values: np.ndarray) -> float:
    """How far the extremes lie beyond the bulk: max |x| over the 99.9th percentile of |x|."""
    a = np.abs(values)
    bulk = float(np.percentile(a, 99.9))
    return float(a.max()) / bulk if bulk > 0 else 1.0


def _output_sqnr(content: bytes, feeds: dict[str, np.ndarray], reference: np.ndarray) -> float:
    from edgeq.runtime import TFLiteRunner

    outs = TFLiteRunner(content=content).run(feeds)
    got = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in outs], 1)
    return float(metrics.sqnr_db(reference, got))


def search(cal, fit: dict[str, np.ndarray]) -> tuple[object, list[str], float, float]:
    """Coordinate search over the longest-tailed tensors; returns (calibrated model, tensors changed,
    output SQNR before, after) on the first ``SAMPLES`` fit samples."""
    from edgeq.runtime import TFLiteRunner

    feeds = {k: v[:SAMPLES] for k, v in fit.items()}
    ref = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1)
                          for o in TFLiteRunner(content=cal.content).run(feeds)], 1)
    recorded = recorded_ranges(cal.content)
    samples = activation_samples(cal.content, feeds, limit=SAMPLES)
    ranked = sorted((n for n in samples if n in recorded), key=lambda n: -tail_ratio(samples[n]))[:TENSORS]
    ranges: dict[str, tuple[float, float]] = {}
    before = best = _output_sqnr(cal.quantize(), feeds, ref)
    changed = []
    for name in ranked:
        lo, hi = recorded[name]
        trials = []
        for f in FACTORS:
            trial = {**ranges, name: (lo * f, hi * f)}
            edited = cal.with_content(with_ranges(cal.content, trial))
            trials.append((_output_sqnr(edited.quantize(), feeds, ref), trial))
        score, trial = max(trials, key=lambda t: t[0])
        if score > best + MIN_GAIN_DB:
            best, ranges = score, trial
            changed.append(name)
    return cal.with_content(with_ranges(cal.content, ranges)), changed, before, best


class RangeSearchStep:
    """End-to-end activation range search (a PTQ step, see ``step.py``; ``--ptq learned`` only: it
    quantizes the model ``TENSORS * len(FACTORS)`` times)."""

    name, needs_held_back = "range_search", True
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        edited, changed, before, after = search(cal, fit)
        if not changed:
            return []
        return [Candidate(edited, f"{len(changed)} of the {TENSORS} longest-tailed activation ranges narrowed by "
                                  f"output SQNR on {min(SAMPLES, len(next(iter(fit.values()))))} fit samples "
                                  f"({before:.1f} -> {after:.1f} dB)")]
