"""Bias correction against accumulated drift, in the calibrated flatbuffer (every source).

In a deep INT8 model the error is made inside the network and accumulates: each layer sees inputs that
already drifted from float, so its output's per-channel mean moves away from the float model's. This step
runs the INT8 model itself (the converter's, fed its own quantized activations) and the float model on the
fit samples, and shifts each conv/depthwise/dense bias by the per-channel mean difference of the layer's
output (empirical bias correction, Nagel et al. 2019, measured on the quantized model's own inputs rather
than predicted from the weight error - which the Keras-graph ``bias_correction`` does).

Layers are corrected one at a time in op order, each measured after its upstream layers were corrected
(the INT8 model's int32 bias is shifted in place and the model re-run). Correcting all layers from one run diverged on EfficientNet-Lite0 (held-back SQNR
16.4 -> 3.6 dB): each layer also corrected the drift it inherits, which its upstream layers removed too.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable, int_feeds, run_each_sample
from edgeq.quantize.prepare.adaround import LAYERS
from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fb

# the INT8 model runs once per layer on these samples. Fewer for layers with many output positions (16 above
# 8192 values per channel) took the zoo's EfficientNet-Lite2 from 18.1 to 17.0 dB eval SQNR
MAX_SAMPLES = 64


def _biased_layers(model) -> dict[str, tuple[int, int]]:
    """Output tensor name -> (op index, bias tensor index) of conv/depthwise/dense ops with a bias."""
    sg, names = model.subgraphs[0], fb.op_names(model)
    return {fb.tensor_name(sg, int(op.outputs[0])): (k, int(op.inputs[2])) for k, op in enumerate(sg.operators)
            if names[op.opcodeIndex] in LAYERS and len(op.inputs) > 2 and int(op.inputs[2]) >= 0}


def channel_means(content: bytes, feeds: dict[str, np.ndarray], names: list[str],
                  table: TensorTable | None = None) -> dict[str, np.ndarray]:
    """The per-channel (last axis) mean of each named tensor over the samples, dequantized when it is int8
    (``feeds`` must already match the model's input types)."""
    table = table or TensorTable.of(content)
    wanted = {n: table.index[n] for n in names if n in table.index}
    sums: dict[str, np.ndarray] = {}
    n_samples = 0
    for values in run_each_sample(content, feeds, sorted(set(wanted.values()))):
        n_samples += 1
        for n, i in wanted.items():
            v = table.real(i, values[i])
            m = v.reshape(-1, v.shape[-1]).mean(0, dtype=np.float64)
            sums[n] = m if n not in sums else sums[n] + m
    return {n: s / n_samples for n, s in sums.items()}


class _Int8Biases:
    """The INT8 model as bytes whose int32 biases are shifted in place: correcting one layer costs no
    re-quantization and no re-serialization (the converter's own quantize runs once, at the end)."""

    def __init__(self, quantized: bytes):
        model = fb.load(quantized)
        sg = model.subgraphs[0]
        layers = _biased_layers(model)
        if _unshare(model, [k for k, _ in layers.values()]):
            quantized = fb.dump(model)  # once: from here on, biases are edited in the bytes
        self.content = bytearray(quantized)
        self.table = TensorTable.of_model(model)
        self.biases: dict[str, tuple[int, np.ndarray]] = {}  # output name -> (buffer, per-channel int32 step)
        for name, (k, _) in layers.items():
            t = sg.tensors[int(sg.operators[k].inputs[2])]
            q = t.quantization
            if t.type != fb.INT32 or not t.buffer or q is None or q.scale is None or name not in self.table.index:
                continue  # a layer left in float
            self.biases[name] = (t.buffer, np.asarray(q.scale, np.float64))

    def write(self, name: str, bias: np.ndarray) -> bool:
        """Write layer ``name``'s bias as the float ``bias`` quantized the way the converter does it
        (round(bias / (input scale x weight scale)), per channel); False when it cannot be written."""
        buffer, step = self.biases[name]
        view = fb.buffer_in_place(self.content, buffer)
        if view is None or view.size != 4 * bias.size or step.size not in (1, bias.size):
            return False
        view.view(np.int32)[:] = np.clip(np.round(bias.astype(np.float64) / step), -2**31, 2**31 - 1).astype(np.int32)
        return True


def _unshare(model, ops: list[int]) -> bool:
    """Give each op's bias (input 2) its own tensor and buffer (the quantizer shares equal constants, e.g.
    zero biases), so shifting one layer's bias moves no other; True when something was copied."""
    import copy

    sg = model.subgraphs[0]
    users: dict[int, int] = {}
    for op in sg.operators:
        for i in (int(i) for i in op.inputs if int(i) >= 0):
            users[sg.tensors[i].buffer] = users.get(sg.tensors[i].buffer, 0) + 1
    changed = False
    for k in ops:
        b = int(sg.operators[k].inputs[2])
        t = sg.tensors[b]
        if not t.buffer or users[t.buffer] == 1:
            continue
        buf = copy.deepcopy(model.buffers[t.buffer])
        model.buffers.append(buf)
        t = copy.deepcopy(t)
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        sg.operators[k].inputs[2] = len(sg.tensors) - 1
        changed = True
    return changed


def corrected(cal, feeds: dict[str, np.ndarray]):
    """``cal`` with every conv/depthwise/dense bias corrected in op order, each after its upstream layers;
    returns (calibrated, INT8 bytes, n) or None when there is nothing to correct.

    The INT8 model runs once per layer on up to MAX_SAMPLES samples, its int32 bias shifted in place; the
    float biases of the calibrated model get the same shifts, and it is quantized once at the end."""
    model = fb.load(cal.content)
    sg = model.subgraphs[0]
    layers = {n: kb for n, kb in _biased_layers(model).items() if fb.const(model, sg, kb[1]) is not None}
    if not layers:
        return None
    feeds = {k: v[:MAX_SAMPLES] for k, v in feeds.items()}
    target = channel_means(cal.content, feeds, list(layers))
    int8 = _Int8Biases(cal.quantize())
    q_feeds = int_feeds(bytes(int8.content), feeds)
    shifts: dict[str, np.ndarray] = {}  # output name -> corrected float bias
    for name in layers:  # op order: upstream layers first
        if name not in target or name not in int8.biases:
            continue
        drift = channel_means(bytes(int8.content), q_feeds, [name], int8.table).get(name)
        if drift is None or drift.shape != target[name].shape:
            continue
        k, b = layers[name]
        # float32, as the calibrated model stores it: the int32 written now is what the final quantize writes
        bias = (fb.const(model, sg, b) + target[name] - drift).astype(np.float32)
        if int8.write(name, bias):
            shifts[name] = bias
    if not shifts:
        return None
    for name, bias in shifts.items():
        k, b = layers[name]
        sg.operators[k].inputs[2] = fb.new_const(model, sg, b, bias, "/bias_drift")
    current = cal.with_content(fb.dump(model))
    return current, current.quantize(), len(shifts)


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
