"""Empirical bias correction: remove the mean output shift that INT8 weight rounding adds.

For each conv/dense layer, the rounding error E = Q(W) - W is simulated exactly as TFLite quantizes
weights (symmetric int8, [-127, 127], one scale per output channel or per tensor), pushed through the
layer on its real inputs from the calibration data, and its per-channel mean subtracted from the bias.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from edgeq.quantize.prepare.graph import CONV_LIKE, Graph, activations, kernel_out_axis_view
from edgeq.quantize.prepare.step import KerasStep


def simulate_int8_weights(kind: str, kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    """``kernel`` after TFLite's symmetric int8 weight rounding (per output channel or per tensor)."""
    view = kernel_out_axis_view(kind, kernel)
    if per_channel:
        peak = np.abs(view).reshape(-1, view.shape[-1]).max(0)
    else:
        peak = np.full(view.shape[-1], np.abs(view).max())
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.round(view / scale), -127, 127) * scale
    return q.reshape(kernel.shape).astype(np.float32)


def correct_biases(model, calib_x: np.ndarray, per_channel: bool) -> tuple[object, int]:
    """Correct every linear conv/dense layer with a bias in place; returns (model, layers corrected)."""
    g = Graph.of(model)
    targets = [n for n, c in g.classes.items() if c in CONV_LIKE and len(g.producers[n]) == 1
               and g.layer_config(n).get("use_bias") and g.layer_config(n).get("activation", "linear") == "linear"]
    if not targets:
        return model, 0
    feeds = sorted({g.producers[n][0] for n in targets})
    inputs = activations(model, feeds, calib_x)
    for name in targets:
        layer = model.get_layer(name)
        kernel, bias = [np.asarray(a) for a in layer.get_weights()]
        err = simulate_int8_weights(g.classes[name], kernel, per_channel) - kernel
        layer.set_weights([err, np.zeros_like(bias)])
        x = inputs[g.producers[name][0]]
        shift = np.concatenate([np.asarray(layer(x[i:i + 100])).reshape(-1, bias.shape[0])
                                for i in range(0, len(x), 100)]).mean(0)
        layer.set_weights([kernel, (bias - shift).astype(np.float32)])
    return model, len(targets)


def bias_correction_step(per_channel: bool = True) -> KerasStep:
    """Empirical bias correction of weight rounding's mean shift (a PTQ step, see ``step.py``); the rounding
    simulated must be the converter's, hence ``per_channel`` from the conversion settings."""
    return KerasStep("bias_correction", partial(correct_biases, per_channel=per_channel),
                     "empirical bias correction of {n} layers")
