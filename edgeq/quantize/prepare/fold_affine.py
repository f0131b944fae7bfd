"""Fold per-channel MUL/ADD constants into the conv/dense weights before them, in the calibrated float model.

A BatchNormalization after the activation (PyTorch's ``Conv -> ReLU -> BN``, common in exported
models) cannot be folded by TFLiteConverter: it survives as ``MUL(const) -> ADD(const)``. In INT8 that
costs twice: the per-channel MUL constant is quantized to ONE per-tensor int8 scale (a channel whose
multiplier is 2 next to one of 280 keeps ~1 significant bit), and each op adds a requantization. For
a positive multiplier ``relu(W x + b) * s == relu((s W) x + s b)``, so the multiply can go into the
weights, which are quantized per output channel anyway; a constant ADD goes into the bias when nothing
non-linear sits between.

This works on the calibrated flatbuffer (TFLiteConverter's float model with recorded min/max), so it
applies to every source (Keras, SavedModel, ONNX). The folded op writes the MUL/ADD's own output
tensor, whose recorded range is what the quantizer then uses.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fm
from edgeq.tflite.flatbuffer import NONE as _NONE, RELU as _RELU

PRODUCERS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": -1, "FULLY_CONNECTED": 0}  # op -> output-channel axis of the weights


def _channel_vector(value: np.ndarray, out_shape, channels: int) -> np.ndarray | None:
    """``value`` as one number per output channel if it broadcasts along the last axis only."""
    shape = list(value.shape)
    if len(shape) > len(out_shape) or any(d != 1 for d in shape[:-1]) or (shape and shape[-1] not in (1, channels)):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def _try_fold(model, sg, names: list[str], k: int, readers) -> bool:
    """Fold operator ``k`` (a MUL or ADD with one constant input) into the op producing its other input."""
    op = sg.operators[k]
    kind = names[op.opcodeIndex]
    if kind not in ("MUL", "ADD") or len(op.inputs) != 2:
        return False
    consts = [fm.const(model, sg, int(i)) for i in op.inputs]
    if (consts[0] is None) == (consts[1] is None):
        return False
    x, c = (int(op.inputs[1]), consts[0]) if consts[0] is not None else (int(op.inputs[0]), consts[1])
    producer = next((p for p in range(k) if x in [int(o) for o in sg.operators[p].outputs]), None)
    if producer is None or readers.get(x) != [k] or x in [int(o) for o in sg.outputs]:
        return False
    prod = sg.operators[producer]
    axis = PRODUCERS.get(names[prod.opcodeIndex])
    out_shape = list(sg.tensors[x].shape)
    if axis is None or not out_shape or list(sg.tensors[int(op.outputs[0])].shape) != out_shape:
        return False
    weights = fm.const(model, sg, int(prod.inputs[1]))
    bias_index = int(prod.inputs[2]) if len(prod.inputs) > 2 else -1
    bias = fm.const(model, sg, bias_index) if bias_index >= 0 else None
    channels = out_shape[-1]
    vec = _channel_vector(c, out_shape, channels)
    if weights is None or vec is None or weights.shape[axis] != channels or (bias_index >= 0 and bias is None):
        return False
    act_p = prod.builtinOptions.fusedActivationFunction
    act_m = op.builtinOptions.fusedActivationFunction if op.builtinOptions is not None else _NONE
    if act_p == _NONE:
        new_act = act_m  # nothing non-linear between: any constant folds, the MUL/ADD's activation moves up
    elif act_p == _RELU and kind == "MUL" and act_m in (_NONE, _RELU) and bool(np.all(vec > 0)):
        new_act = _RELU  # relu(z) * s == relu(z * s) for s > 0
    else:
        return False
    bias = np.zeros(channels, np.float32) if bias is None else bias.reshape(-1)
    if kind == "MUL":
        shape = [1] * weights.ndim
        shape[axis] = channels
        prod.inputs[1] = fm.new_const(model, sg, int(prod.inputs[1]), weights * vec.reshape(shape), "/folded_scale")
        bias = bias * vec
    else:
        bias = bias + vec
    new_bias = fm.new_const(model, sg, bias_index, bias, "/folded_affine")
    if len(prod.inputs) > 2:
        prod.inputs[2] = new_bias
    else:
        prod.inputs = np.append(prod.inputs, new_bias).astype(np.int32)
    prod.builtinOptions.fusedActivationFunction = new_act
    prod.outputs[0] = op.outputs[0]  # the MUL/ADD's output tensor keeps its name and recorded range
    del sg.operators[k]
    return True


def fold_affine(calibrated: bytes) -> tuple[bytes, int]:
    """``calibrated`` with per-channel MUL/ADD constants folded into the preceding conv/dense; (bytes, folds)."""
    model = fm.load(calibrated)
    names = fm.op_names(model)
    folds = 0
    for sg in model.subgraphs:
        k = 0
        while k < len(sg.operators):
            if _try_fold(model, sg, names, k, fm.readers(sg)):
                folds += 1  # the producer may take the next MUL/ADD of a chain too: look at index k again
            else:
                k += 1
    if not folds:
        return calibrated, 0
    return fm.dump(model), folds


class FoldAffineStep:
    """Per-channel MUL/ADD folded into the conv/dense before them, in the calibrated flatbuffer (a PTQ step)."""

    name, needs_held_back = "fold_affine", False
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        content, n = fold_affine(cal.content)
        return [Candidate(cal.with_content(content), f"{n} per-channel MUL/ADD folded into conv/dense weights")] \
            if n else []
