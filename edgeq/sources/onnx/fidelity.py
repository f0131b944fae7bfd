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
# Outputs this close to onnxruntime's in direction and size are never refused, whatever their max error
# (one outlier value, or padded positions, must not sink a graph users would find exact).
FAITHFUL_COSINE = 0.9999
NORM_TOLERANCE = 0.01


@dataclass(frozen=True)
class Fidelity:
    """How far the float TFLite is from onnxruntime: max abs error, relative error, cosine."""

    samples: int
    inputs: str  # "calibration data", "evaluation data" or "synthetic"
    max_abs_error: float
    max_rel_error: float  # max |err| / max |reference|, the worst output
    cosine: float  # mean per-sample cosine, the worst output
    tolerance: float
    norm_ratio: float = 1.0  # |tflite| / |onnxruntime|, the output furthest from 1 (a cosine cannot see scale)

    @property
    def ok(self) -> bool:
        return (bool(np.isfinite(self.max_rel_error)) and self.max_rel_error <= self.tolerance) \
            or (self.cosine >= FAITHFUL_COSINE and abs(self.norm_ratio - 1.0) <= NORM_TOLERANCE)

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


def _mask(feeds: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    """The attention mask among the inputs ([n, tokens] of 0/1 named like a mask), if any."""
    for name, v in feeds.items():
        v = np.asarray(v)
        if "mask" in name.lower() and v.ndim == 2 and len(v) == n and np.isin(v, (0, 1)).all():
            return v.astype(bool)
    return None


def _valid(y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """One output as [n, values], keeping only unpadded token positions when the output is per token."""
    y = np.asarray(y, np.float64)
    if mask is not None and y.ndim >= 2 and y.shape[:2] == mask.shape:
        return y[mask].reshape(1, -1)  # padded positions are undefined: encoders differ there legitimately
    return y.reshape(len(y), -1)


def check_fidelity(float_tflite: bytes, predict, feeds: dict[str, np.ndarray], source: str, inputs: str,
                   tolerance: float = DEFAULT_TOLERANCE) -> Fidelity:
    """Compare ``float_tflite`` with ``predict`` (onnxruntime) on ``feeds``; raise when the outputs disagree.

    Judged per output, relative to that output's own largest magnitude (a box head in pixels does not
    hide a score head in [0, 1]), at the token positions the attention mask keeps; a model whose every
    output has cosine >= FAITHFUL_COSINE is faithful whatever its max error."""
    from edgeq.runtime import TFLiteRunner

    n = min(MAX_SAMPLES, len(next(iter(feeds.values()))))
    feeds = {k: v[:n] for k, v in feeds.items()}
    got = TFLiteRunner(content=float_tflite).run(feeds)
    ref = predict(feeds)
    mask = _mask(feeds, n)
    pairs = [(_valid(r, mask), _valid(o, mask)) for r, o in zip(ref, got)]
    if len(ref) != len(got) or any(r.shape != o.shape for r, o in pairs):
        raise ConversionError(f"{source}: the converted float model's outputs ({[np.shape(x) for x in got]}) do "
                              f"not match onnxruntime's ({[np.shape(x) for x in ref]}); the ONNX graph did not "
                              "convert faithfully (rerun with --debug)")
    max_abs = max(metrics.max_abs_error(r, o) for r, o in pairs)
    rel = max(metrics.max_abs_error(r, o) / (float(np.max(np.abs(r))) or 1.0) for r, o in pairs)
    cosine = min(metrics.cosine(r, o) for r, o in pairs)
    ratios = [float(np.linalg.norm(o) / (np.linalg.norm(r) or 1.0)) for r, o in pairs]
    norm_ratio = max(ratios, key=lambda x: abs(x - 1.0))
    fid = Fidelity(samples=n, inputs=inputs + (" (unpadded tokens)" if mask is not None else ""),
                   max_abs_error=max_abs, max_rel_error=rel, cosine=cosine, tolerance=tolerance,
                   norm_ratio=norm_ratio)
    if not fid.ok:
        raise ConversionError(f"{source}: float conversion disagrees with onnxruntime before quantization "
                              f"(max |err| {max_abs:.3g}, relative {rel:.3g} > {tolerance:g}, cosine {cosine:.5f} "
                              f"on {n} {inputs} samples); onnx2tf mis-converted the graph, not a quantization issue")
    return fid
