"""Bias correction against accumulated drift, in the calibrated flatbuffer (every source).

In a deep INT8 model the error is made inside the network and accumulates: each layer sees inputs that
already drifted from float, so its output's per-channel mean moves away from the float model's. This step
runs the INT8 model itself (the converter's, fed its own quantized activations) and the float model on the
fit samples, and shifts each conv/depthwise/dense bias by the per-channel mean difference of the layer's
output (empirical bias correction, Nagel et al. 2019, measured on the quantized model's own inputs rather
than predicted from the weight error - which the Keras-graph ``bias_correction`` does).

Layers are corrected one at a time in op order, each measured after its upstream layers were corrected
(re-quantize, re-run). Correcting all layers from one run diverged on EfficientNet-Lite0 (held-back SQNR
16.4 -> 3.6 dB): each layer also corrected the drift it inherits, which its upstream layers removed too.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fb

LAYERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
MAX_SAMPLES = 64  # a channel mean over 64 samples x every position is settled; the model runs once per layer


def _biased_layers(model) -> dict[str, tuple[int, int]]:
    """Output tensor name -> (op index, bias tensor index) of conv/depthwise/dense ops with a constant
    float bias. A bias shared by several ops (the converter shares equal constants, e.g. zeros) is fine:
    the corrected bias is a new tensor for that op alone."""
    sg, names = model.subgraphs[0], fb.op_names(model)
    found = {}
    for k, op in enumerate(sg.operators):
        if names[op.opcodeIndex] not in LAYERS or len(op.inputs) < 3 or int(op.inputs[2]) < 0:
            continue
        b = int(op.inputs[2])
        value = fb.const(model, sg, b)
        if value is None or value.dtype != np.float32:
            continue
        found[fb.tensor_name(sg, int(op.outputs[0]))] = (k, b)
    return found


def channel_means(content: bytes, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) mean of each named tensor over the samples, dequantized when it is int8
    (``feeds`` are float: quantized to the model's int8 inputs first)."""
    from edgeq.quantize.prepare.adaround import _int_feeds
    from edgeq.quantize.prepare.ranges import run_each_sample

    model = fb.load(content)
    sg = model.subgraphs[0]
    index = {fb.tensor_name(sg, i): i for i in range(len(sg.tensors))}
    wanted = {n: index[n] for n in names if n in index}
    quant = {}
    for n, i in wanted.items():
        q = sg.tensors[i].quantization
        if sg.tensors[i].type == 9 and q is not None and q.scale is not None and len(q.scale) == 1:  # 9: INT8
            quant[n] = (float(q.scale[0]), float(q.zeroPoint[0]) if q.zeroPoint is not None else 0.0)
    sums: dict[str, np.ndarray] = {}
    count = 0
    for values in run_each_sample(content, _int_feeds(content, feeds), sorted(set(wanted.values()))):
        count += 1
        for n, i in wanted.items():
            v = values[i].astype(np.float64)
            if n in quant:
                scale, zero = quant[n]
                v = (v - zero) * scale
            m = v.reshape(-1, v.shape[-1]).mean(0)
            sums[n] = m if n not in sums else sums[n] + m
    return {n: s / max(count, 1) for n, s in sums.items()}


def corrected(cal, feeds: dict[str, np.ndarray]):
    """``cal`` with every conv/depthwise/dense bias corrected in op order, each after its upstream layers
    (the INT8 model is re-quantized and re-run before each layer); returns (calibrated, INT8 bytes, n)
    or None when there is nothing to correct."""
    layers = _biased_layers(fb.load(cal.content))
    if not layers:
        return None
    feeds = {k: v[:MAX_SAMPLES] for k, v in feeds.items()}
    target = channel_means(cal.content, feeds, list(layers))
    current, quantized, changed = cal, cal.quantize(), 0
    for name in layers:  # op order: upstream layers first
        drift = channel_means(quantized, feeds, [name]).get(name)
        if name not in target or drift is None or drift.shape != target[name].shape:
            continue
        model = fb.load(current.content)
        sg = model.subgraphs[0]
        k, b = _biased_layers(model)[name]
        bias = fb.const(model, sg, b)
        if bias.shape != drift.shape:
            continue
        new = (bias.astype(np.float64) + target[name] - drift).astype(np.float32)
        sg.operators[k].inputs[2] = fb.new_const(model, sg, b, new, "/bias_drift")
        current = current.with_content(fb.dump(model))
        quantized, changed = current.quantize(), changed + 1
    return (current, quantized, changed) if changed else None


class BiasDriftStep:
    """Biases shifted by the INT8 model's measured per-channel output drift (a PTQ step, see ``step.py``);
    it fits one number per channel on the fit samples, so it is judged on held-back ones."""

    name, needs_held_back = "bias_drift", True
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        done = corrected(cal, fit)
        if done is None:
            return []
        edited, content, n = done
        return [Candidate(edited, f"biases of {n} layers shifted by the INT8 model's own output drift", "", content)]
