"""Fidelity check of an ONNX conversion: the float TFLite model against onnxruntime on the same inputs.

Runs on the FP32 conversion the pipeline makes anyway (the size reference), before quantization,
so that a float graph onnx2tf got wrong fails loudly instead of being blamed on INT8.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeq import metrics
from edgeq.errors import ConversionError

DEFAULT_TOLERANCE = 1e-2  # max |err| relative to the largest reference magnitude
MAX_SAMPLES = 32


@dataclass(frozen=True)
class Fidelity:
    """How far the float TFLite is from onnxruntime: max abs error, relative error, cosine."""

    samples: int
    inputs: str  # "calibration data", "evaluation data" or "synthetic"
    max_abs_error: float
    max_rel_error: float  # max |err| / max |reference|
    cosine: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_rel_error)) and self.max_rel_error <= self.tolerance

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = (f"float TFLite vs onnxruntime on {self.samples} {self.inputs} samples: max |err| "
                        f"{self.max_abs_error:.3g}, relative {self.max_rel_error:.3g} (tolerance "
                        f"{self.tolerance:g}), cosine {self.cosine:.6f}")
        return d


def synthetic_inputs(specs, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for the check when no data was given: floats in [0, 1), integers 0/1 (valid ids and masks)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = (n, *[1 if d is None else d for d in s.shape[1:]])
        dt = np.dtype(s.dtype)
        feeds[s.name] = (rng.random(shape).astype(dt) if dt.kind == "f"
                         else rng.integers(0, 2, size=shape).astype(dt))
    return feeds


def check_fidelity(float_tflite: bytes, predict, feeds: dict[str, np.ndarray], source: str, inputs: str,
                   tolerance: float = DEFAULT_TOLERANCE) -> Fidelity:
    """Compare ``float_tflite`` with ``predict`` (onnxruntime) on ``feeds``; raise beyond ``tolerance``."""
    from edgeq.runtime import TFLiteRunner

    n = min(MAX_SAMPLES, len(next(iter(feeds.values()))))
    feeds = {k: v[:n] for k, v in feeds.items()}
    got = TFLiteRunner(content=float_tflite).run(feeds)
    ref = predict(feeds)
    r = np.concatenate([np.asarray(x, np.float64).reshape(n, -1) for x in ref], axis=1)
    o = np.concatenate([np.asarray(x, np.float64).reshape(n, -1) for x in got], axis=1)
    if r.shape != o.shape:
        raise ConversionError(f"{source}: the converted float model's outputs have {o.shape[1]} values per "
                              f"sample but onnxruntime's have {r.shape[1]}; the ONNX graph did not convert "
                              "faithfully (rerun with --debug)")
    max_abs = metrics.max_abs_error(r, o)
    scale = float(np.max(np.abs(r))) or 1.0
    fid = Fidelity(samples=n, inputs=inputs, max_abs_error=max_abs, max_rel_error=max_abs / scale,
                   cosine=metrics.cosine(r, o), tolerance=tolerance)
    if not fid.ok:
        raise ConversionError(f"{source}: float conversion disagrees with onnxruntime before quantization "
                              f"(max |err| {max_abs:.3g}, relative {fid.max_rel_error:.3g} > {tolerance:g} on "
                              f"{n} {inputs} samples); onnx2tf mis-converted the graph, not a quantization issue")
    return fid
