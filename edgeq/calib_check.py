"""Calibration sanity: warnings for data that converts fine but makes a wrong INT8 model.

Nothing here refuses a conversion; each finding is one line in the report (and its JSON) naming the file,
the input and the likely cause, because the usual one (data preprocessed differently from training)
is invisible otherwise until the model ships.
"""
from __future__ import annotations

import numpy as np

from edgeq.data import Dataset
from edgeq.evaluate import EvalResult

RANGE_RATIO = 10.0  # calibration vs eval value spans differing by more than this is suspicious
MAX_INT8_DROP = 5.0  # top-1 points a full-INT8 model may lose before the report says so


def _span(a: np.ndarray) -> tuple[float, float]:
    return float(a.min()), float(a.max())


def calibration_warnings(calib: Dataset | None, evalds: Dataset | None, accuracy: EvalResult | None,
                         full_int8: bool) -> list[str]:
    """One line per finding: constant calibration data, calibration vs eval range off by more than 10x,
    a full-INT8 model losing more than 5 top-1 points against float."""
    out: list[str] = []
    for name, x in (calib.inputs.items() if calib is not None else ()):
        if x.dtype.kind != "f" or x.size == 0:
            continue
        lo, hi = _span(x)
        if lo == hi:
            out.append(f"calibration data {calib.source} input '{name}' is constant (every value {lo:g}); "
                       "INT8 ranges from it are meaningless: check the preprocessing that produced it")
            continue
        e = evalds.inputs.get(name) if evalds is not None else None
        if e is None or e.dtype.kind != "f" or e.size == 0:
            continue
        elo, ehi = _span(e)
        span_c, span_e = hi - lo, ehi - elo
        if span_e > 0 and max(span_c / span_e, span_e / span_c) > RANGE_RATIO:
            out.append(f"calibration data {calib.source} input '{name}' spans [{lo:.4g}, {hi:.4g}] but eval data "
                       f"{evalds.source} spans [{elo:.4g}, {ehi:.4g}] (>{RANGE_RATIO:g}x apart): they were likely "
                       "preprocessed differently (e.g. 0..255 vs 0..1); calibrate on data prepared as for training")
    drop = accuracy.drop_points if accuracy is not None else None
    if full_int8 and drop is not None and drop > MAX_INT8_DROP:
        out.append(f"full-INT8 loses {drop:.2f} top-1 points against float (more than {MAX_INT8_DROP:g}): the usual "
                   "cause is calibration data preprocessed differently from training (scale, mean/std, layout); "
                   "check it, then try --mode mixed or int16x8")
    return out
