"""Activation-aware channel equalization on the Keras graph: ``equalize_calibrated``'s scaling, for QAT.

PTQ equalizes in the calibrated flatbuffer (``equalize_calibrated.py``), which QAT never sees: QAT trains the
Keras layers. To start fine-tuning from the weights PTQ shipped, the same migration is replayed here on the
same chains as the converter lowers them:

* inside a SeparableConv2D: its depthwise output (a tensor of its own in TFLite, quantized per tensor) into
  its pointwise kernel;
* ``P -> (ReLU | pooling | padding | dropout)* -> Q`` with Q a Conv2D or Dense and no clipping ReLU between.

Output channel c of P is divided by s_c = a_c^alpha / w_c^(1-alpha) (a_c: the channel's calibration peak,
w_c: Q's weight peak on that input channel, normalized to geometric mean 1), Q's weights reading c are
multiplied by it; the float function is unchanged. Run on a BN-folded model (the weights the converter sees).
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.equalize import _in_ranges, find_pairs
from edgeq.quantize.prepare.equalize_calibrated import migration_scales
from edgeq.quantize.prepare.graph import Graph, activations

CONSUMERS = ("Conv2D", "Dense")  # as in the flatbuffer step: consumers whose input channels have own weights


def _depthwise_peaks(layer, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Per-channel max |depthwise output| of a SeparableConv2D on its inputs ``x`` (channels last)."""
    import keras

    k = np.asarray(layer.depthwise_kernel)
    peak = np.zeros(k.shape[2] * k.shape[3])
    for i in range(0, len(x), batch):
        mid = keras.ops.depthwise_conv(x[i:i + batch], k, strides=layer.strides, padding=layer.padding,
                                       dilation_rate=layer.dilation_rate)
        peak = np.maximum(peak, np.abs(np.asarray(mid)).reshape(-1, peak.size).max(0))
    return peak


def equalize_activations(model, calib_x: np.ndarray, alpha: float) -> tuple[object, int]:
    """Equalize ``model`` in place (weights only, channels-last layers); returns (model, chains equalized)."""
    g = Graph.of(model)
    def last(n: str) -> bool:  # channels are read on the last axis; Keras on TF CPU runs NCHW convs rarely
        return g.layer_config(n).get("data_format", "channels_last") == "channels_last"

    seps = [n for n, cls in g.classes.items() if cls == "SeparableConv2D" and last(n)]
    pairs = [p for p in find_pairs(g) if p.clip is None and g.classes[p.second] in CONSUMERS
             and last(p.first) and last(p.second)]
    w = {n: [np.asarray(a, np.float64) for a in model.get_layer(n).get_weights()]
         for n in seps + [n for p in pairs for n in (p.first, p.second)]}
    done = 0
    inputs = activations(model, seps, calib_x, batch=64, of="input")
    for n in seps:  # depthwise -> pointwise inside the layer
        dk, pk = w[n][0], w[n][1]
        wpeak = np.abs(pk).reshape(-1, pk.shape[-1]).max(1)
        s = migration_scales(_depthwise_peaks(model.get_layer(n), inputs[n]), wpeak, alpha)
        w[n][0] = dk / s.reshape(dk.shape[2], dk.shape[3])
        w[n][1] = pk * s[None, None, :, None]
        done += 1
    peaks = activations(model, [p.first for p in pairs], calib_x)
    for p in pairs:
        k1, k2 = g.classes[p.first], g.classes[p.second]
        act = np.abs(peaks[p.first]).reshape(-1, peaks[p.first].shape[-1]).max(0)
        wq = w[p.second][0]
        if len(act) != wq.shape[-2 if k2 == "Conv2D" else 0]:
            continue  # e.g. a Flatten between: input columns are not channels
        s = migration_scales(act, _in_ranges(k2, wq), alpha)
        first = w[p.first]  # Conv2D, DepthwiseConv2D or Dense: [kernel] or [kernel, bias]
        first[0] = first[0] / (s.reshape(first[0].shape[2], first[0].shape[3]) if k1 == "DepthwiseConv2D" else s)
        if len(first) > 1:
            first[1] = first[1] / s
        w[p.second][0] = wq * (s[:, None] if k2 == "Dense" else s[None, None, :, None])
        done += 1
    for name, ws in w.items():
        model.get_layer(name).set_weights([a.astype(np.float32) for a in ws])
    return model, done
