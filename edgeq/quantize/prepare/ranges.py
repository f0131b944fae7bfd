"""Activation ranges better than min/max: percentile or MSE-optimal clipping, written where the converter reads them.

TFLiteConverter calibrates in two phases: it records each tensor's min/max in a calibrated float model,
then quantizes from those numbers. ``Calibrated`` (quantize/selective.py) exposes the two phases; this
module runs the calibrated model in LiteRT on the calibration data, picks a clipped range per
activation tensor, writes it into the calibrated model's min/max fields and lets the converter's own
quantizer (``mlir_quantize``) do the rest. Only outputs of ops whose output range the quantizer takes
from calibration are edited (conv, depthwise, fully connected, add); fixed-range ops (softmax) and
same-scale ops (pooling, reshape) follow by the quantizer's own rules.
"""
from __future__ import annotations

from enum import Enum

import numpy as np

from edgeq.quantize.prepare.activations import run_each_sample
from edgeq.quantize.prepare.step import Backend, Candidate

EDITABLE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD"}
MAX_VALUES = 200_000  # per-tensor sample kept for the range search
ALPHAS = np.linspace(0.2, 1.0, 33)


class RangeMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"  # 99.99th percentile of |x| on each side
    MSE = "mse"  # the clipping that minimizes the int8 quantize-dequantize error


def _mse_range(v: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    best, best_err = (lo, hi), np.inf
    for a in ALPHAS:
        l, h = min(lo * a, 0.0), max(hi * a, 0.0)
        scale = (h - l) / 255.0 or 1.0
        q = np.clip(np.round((v - l) / scale), 0, 255) * scale + l
        err = float(np.mean((q - v) ** 2))
        if err < best_err:
            best, best_err = (l, h), err
    return best


def choose_range(values: np.ndarray, method: RangeMethod) -> tuple[float, float]:
    """The (min, max) to quantize a tensor with, from a sample of its values."""
    lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
    if method is RangeMethod.MINMAX:
        return lo, hi
    if method is RangeMethod.PERCENTILE:
        return float(min(np.percentile(values, 0.01), 0.0)), float(max(np.percentile(values, 99.99), 0.0))
    return _mse_range(values, lo, hi)


def editable_tensors(content: bytes) -> dict[int, str]:
    """Output tensors (index -> name) of the ops whose range the quantizer takes from calibration."""
    from edgeq.modelinfo import open_interpreter

    interp = open_interpreter(content=content)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return {op["outputs"][0]: names[op["outputs"][0]] for op in interp._get_ops_details()  # noqa: SLF001
            if op["op_name"] in EDITABLE_OPS and len(op["outputs"])}


def activation_samples(calibrated: bytes, feeds: dict[str, np.ndarray], limit: int = 100) -> dict[str, np.ndarray]:
    """Values of every editable activation tensor on up to ``limit`` calibration samples (name -> flat sample)."""
    wanted = editable_tensors(calibrated)
    n = min(limit, len(next(iter(feeds.values()))))
    per_sample = max(1, MAX_VALUES // n)
    rng = np.random.default_rng(0)
    got: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    extremes: dict[int, list[float]] = {i: [] for i in wanted}
    for values in run_each_sample(calibrated, feeds, list(wanted), limit):
        for i, v in values.items():
            v = v.reshape(-1)
            extremes[i] += [float(v.min()), float(v.max())]
            got[i].append(v if v.size <= per_sample else rng.choice(v, per_sample, replace=False))
    # keep the true extremes in the sample so MINMAX reproduces the converter's own range
    return {wanted[i]: np.concatenate(got[i] + [np.array(extremes[i], np.float32)]) for i in wanted}


def with_ranges(calibrated: bytes, ranges: dict[str, tuple[float, float]]) -> bytes:
    """``calibrated`` with the min/max of the named tensors replaced."""
    from edgeq.tflite import flatbuffer

    model = flatbuffer.load(calibrated)
    for sg in model.subgraphs:
        for t in sg.tensors:
            name = flatbuffer.name_of(t)
            if name in ranges and t.quantization is not None and t.quantization.min is not None \
                    and len(t.quantization.min) == 1:
                lo, hi = ranges[name]
                t.quantization.min = [float(lo)]
                t.quantization.max = [float(hi)]
    return flatbuffer.dump(model)


def clipped_models(calibrated, feeds: dict[str, np.ndarray]):
    """Yield (method, edited calibrated model, INT8 model bytes) for each clipping method, quantized by the
    converter's own quantizer (the calibrated model is what later flatbuffer steps start from)."""
    samples = activation_samples(calibrated.content, feeds)
    for method in (RangeMethod.PERCENTILE, RangeMethod.MSE):
        ranges = {name: choose_range(v, method) for name, v in samples.items()}
        edited = type(calibrated)(with_ranges(calibrated.content, ranges), calibrated.per_channel, calibrated.io,
                                  calibrated.source)
        yield method, edited, edited.quantize()


class RangesStep:
    """Activation ranges clipped by percentile or by per-tensor MSE (a PTQ step, see ``step.py``)."""

    name, needs_held_back = "ranges", False
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        return [Candidate(edited, f"{method.value} clipping of activation ranges", method.value, content)
                for method, edited, content in clipped_models(cal, fit)]
